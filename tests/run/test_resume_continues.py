"""`checkpoint_path=` continues the run: its seed (unless given), its model folder, a Sacred run pointing to the one it
continues, messages from which t_env to which, and a checkpoint that does not fit the requested config is named."""
import glob
import json
import os
import shutil

import pytest
from test_resume import SETTINGS, assert_same, load_all

from helpers import run_main, sacred_dir
from main import main
from utils.checkpoint import checkpoint_mismatch

TINY = ["t_max=60", "env_args.episode_limit=5", "test_nepisode=2", "test_interval=60", "log_interval=60",
        "runner_log_interval=60", "learner_log_interval=60", "save_model_interval=60", "use_tensorboard=False"]
ON_POLICY = ["batch_size_run=2", "batch_size=2", "buffer_size=2"]


def read(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def test_resume_with_only_checkpoint_path_equals_the_uninterrupted_run(tmp_path, capsys):
    """Stopped by t_max at 155, resumed with the same command and checkpoint_path= (no seed=): the same as never
    stopped, on the deterministic matrix game."""
    run_main(tmp_path / "full", "qmix", "matrix_game", *SETTINGS)  # t_max=300, seed=3
    run_main(tmp_path / "part", "qmix", "matrix_game", *SETTINGS, "t_max=150")
    models = glob.glob(str(tmp_path / "part" / "models" / "*"))[0]
    part_run = sacred_dir(tmp_path / "part", "qmix", "penalty")
    capsys.readouterr()

    argv = ["main.py", "--config=qmix", "--env-config=matrix_game", "with", f"local_results_path={tmp_path / 'res'}",
            *SETTINGS, f"checkpoint_path={models}"]
    assert main(argv) == 0
    assert "Resuming at t_env 155 of 300" in capsys.readouterr().err

    # the same model folder, new checkpoints beside the old; no new one
    assert sorted(os.listdir(models)) == ["155", "305", "5", "config.json"]
    assert not os.path.exists(tmp_path / "res" / "models")
    run = sacred_dir(tmp_path / "res", "qmix", "penalty")
    assert read(run, "config.json")["seed"] == 3  # the checkpoint's
    resumed_from = read(run, "info.json")["resumed_from"]
    assert resumed_from["checkpoint"] == os.path.join(models, "155") and resumed_from["step"] == 155
    assert resumed_from["model_dir"] == models and resumed_from["same_model_dir"]
    assert resumed_from["sacred_run"] == {"id": os.path.basename(part_run), "dir": part_run}

    full_models = glob.glob(str(tmp_path / "full" / "models" / "*"))[0]
    assert_same(load_all(os.path.join(full_models, "305")), load_all(os.path.join(models, "305")))
    full, resumed = read(sacred_dir(tmp_path / "full", "qmix", "penalty"), "info.json"), read(run, "info.json")
    for key in ("epsilon", "test_return_mean", "return_mean", "loss", "q_taken_mean", "grad_norm"):
        logged = dict(zip(full[f"{key}_T"], full[key]))
        assert resumed[key] and all(logged[t] == v for t, v in zip(resumed[f"{key}_T"], resumed[key])), key


def test_a_seed_other_than_the_checkpoints_is_refused(tmp_path, capsys):
    """The RNG states come from the checkpoint: another seed= would only rename the run (config.json, the model
    folder) and make the results tools count it as another seed; the checkpoint's own seed is accepted."""
    run_main(tmp_path / "a", "vdn", "matrix_game", *TINY, "batch_size=4", "buffer_size=8")
    models = glob.glob(str(tmp_path / "a" / "models" / "*"))[0]
    capsys.readouterr()
    run_main(tmp_path / "b", "vdn", "matrix_game", *TINY, "batch_size=4", "buffer_size=8", "t_max=120",
             f"checkpoint_path={models}", "seed=11", expect=2)  # run_main gives seed=3 first; the later seed=11 wins
    err = capsys.readouterr().err
    assert "seed=11 differs from the seed of the checkpoint's run (3)" in err and "leave seed= out" in err
    assert not os.path.exists(tmp_path / "b" / "sacred")
    run_main(tmp_path / "c", "vdn", "matrix_game", *TINY, "batch_size=4", "buffer_size=8", "t_max=120",
             f"checkpoint_path={models}")  # seed=3: the checkpoint's
    assert read(sacred_dir(tmp_path / "c", "vdn", "penalty"), "config.json")["seed"] == 3


@pytest.fixture(scope="module")
def mappo_models(tmp_path_factory):
    results = tmp_path_factory.mktemp("mappo")
    run_main(results, "mappo", "matrix_game", *TINY, *ON_POLICY)
    return glob.glob(str(results / "models" / "*"))[0]


def test_evaluating_with_another_algorithm_names_it(tmp_path, capsys, mappo_models):
    run_main(tmp_path, "qmix", "matrix_game", *TINY, "evaluate=True", f"checkpoint_path={mappo_models}", expect=2)
    err = capsys.readouterr().err
    assert "the checkpoint was trained with mappo (learner ppo_learner" in err and "use --config=mappo" in err
    assert "you asked for qmix (learner q_learner" in err and "Missing key" not in err
    assert not os.path.exists(tmp_path / "sacred")  # refused before the run started


def test_resuming_with_other_network_settings_names_them(tmp_path, capsys, mappo_models):
    run_main(tmp_path, "mappo", "matrix_game", *TINY, *ON_POLICY, "hidden_dim=32", f"checkpoint_path={mappo_models}",
             expect=2)
    err = capsys.readouterr().err
    assert "built with hidden_dim=64; this run asks for hidden_dim=32: pass hidden_dim=64" in err


def test_a_load_failure_without_config_json_is_named(tmp_path, capsys, mappo_models):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(mappo_models, old)
    os.remove(old / "config.json")  # as written before checkpoints saved their config
    run_main(tmp_path / "r", "mappo", "matrix_game", *TINY, *ON_POLICY, "hidden_dim=32", "evaluate=True",
             f"checkpoint_path={old}", expect=1)
    err = capsys.readouterr().err
    assert "cannot load" in err and "has no config.json to compare with" in err


def test_env_shapes_are_compared():
    saved = {"name": "qmix", "learner": "q_learner", "mixer": "qmix", "hidden_dim": 64, "n_agents": 2, "n_actions": 3,
             "obs_shape": 6, "state_shape": 4, "env_config": "matrix_game", "env_args": {"game": "penalty", "seed": 1}}
    assert checkpoint_mismatch(saved, dict(saved)) is None
    why = checkpoint_mismatch(saved, {**saved, "n_agents": 3, "env_config": "lbf"})
    assert "n_agents 2" in why and "gives n_agents 3" in why and "--env-config=matrix_game" in why
    assert "seed" not in why
    # evaluation loads the agents only: the state's size and the mixer's width do not matter there
    assert checkpoint_mismatch(saved, {**saved, "state_shape": 5, "mixing_embed_dim": 16}, evaluate=True) is None
    assert "state_shape" in checkpoint_mismatch(saved, {**saved, "state_shape": 5})
    assert checkpoint_mismatch({**saved, "mixing_embed_dim": 32}, {**saved, "mixing_embed_dim": 16})
    # a mixer setting that this mixer does not use is no mismatch
    assert checkpoint_mismatch({**saved, "num_kernel": 10}, {**saved, "num_kernel": 4}) is None
    # checkpoints whose config predates a key compare on the rest
    assert checkpoint_mismatch({"learner": "q_learner"}, {**saved}) is None


def test_evaluating_on_an_env_of_other_shapes_names_them_and_leaves_no_run(tmp_path, capsys, mappo_models):
    """The env's shapes are known once the run has built the env: still a config error, and no run folder stays."""
    run_main(tmp_path, "mappo", "two_switch", "test_nepisode=2", "evaluate=True", f"checkpoint_path={mappo_models}",
             expect=2)
    err = capsys.readouterr().err
    assert "trained on an env with n_actions 3, obs_shape 6" in err and "use --env-config=matrix_game" in err
    assert not os.path.exists(tmp_path / "sacred") and not glob.glob(str(tmp_path / "tb_logs" / "*"))


def test_a_resume_never_writes_into_a_folder_another_process_writes(tmp_path, capsys):
    """While the run that owns a model folder still holds its lock (it is running), a resume from its latest
    checkpoint continues in a new folder instead of interleaving two histories there."""
    from utils.files import FolderLock

    run_main(tmp_path / "a", "vdn", "matrix_game", *TINY, "batch_size=4", "buffer_size=8")
    models = glob.glob(str(tmp_path / "a" / "models" / "*"))[0]
    before = sorted(os.listdir(models))
    held = FolderLock.try_acquire(models)  # as the live writer would
    assert held is not None and FolderLock.try_acquire(models) is None
    capsys.readouterr()
    run_main(tmp_path / "b", "vdn", "matrix_game", *TINY, "batch_size=4", "buffer_size=8", "t_max=120",
             f"checkpoint_path={models}")
    assert "another process is writing into" in capsys.readouterr().err
    assert sorted(os.listdir(models)) == before
    assert len(glob.glob(str(tmp_path / "b" / "models" / "*" / "125"))) == 1
    held.release()
    assert FolderLock.try_acquire(models) is not None  # released: the next resume may continue there


def test_a_resumed_runs_tensorboard_drops_what_the_dead_process_logged_after_the_checkpoint(tmp_path):
    """A run that died after logging past its checkpoint at 155 (its checkpoint at 305 never written), resumed in its
    own folders: TensorBoard shows the dead run's steps up to the checkpoint's, 155 included (logged before the save),
    then the resumed run's, each once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = [s for s in SETTINGS if s != "use_tensorboard=False"] + ["use_tensorboard=True"]
    run_main(tmp_path, "qmix", "matrix_game", *settings)
    models = glob.glob(str(tmp_path / "models" / "*"))[0]
    shutil.rmtree(os.path.join(models, "305"))
    run_main(tmp_path, "qmix", "matrix_game", *settings, f"checkpoint_path={models}")
    (tb_dir,) = glob.glob(str(tmp_path / "tb_logs" / "*"))
    assert len(glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))) == 2  # both processes wrote there
    events = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    events.Reload()
    first, resumed = (read(os.path.join(tmp_path, "sacred", "qmix", "penalty", i), "info.json") for i in "12")
    for tag in ("epsilon", "return_mean", "test_return_mean"):
        expected = [t for t in first[f"{tag}_T"] if t <= 155] + resumed[f"{tag}_T"]
        assert 155 in expected and [e.step for e in events.Scalars(tag)] == expected, tag
    later = {e.step: e.value for e in events.Scalars("epsilon") if e.step > 155}
    assert later == pytest.approx(dict(zip(resumed["epsilon_T"], resumed["epsilon"])))
