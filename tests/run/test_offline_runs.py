"""run=offline end to end through src/main.py: every offline config, resume, normalised score, clear errors."""
import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch as th

from helpers import ctrl_c_run, make_ctx, run_main, sacred_dir, write_random_dataset
from offline import DatasetWriter
from utils.checkpoint import checkpoint_steps
from utils.config import available, load_alg

# learners that train on a preference set (omapl, marl_sl) run end to end in tests/learners/test_*_runs.py, on a
# dataset with one
OFFLINE = [a for a in available("algs") if load_alg(a).get("run") == "offline" and "preference_set" not in load_alg(a)]
TINY = ["offline_steps=6", "offline_test_interval=3", "offline_log_interval=3", "offline_save_interval=3",
        "batch_size=4", "test_nepisode=2", "env_args.episode_limit=5"]


class ConstantMAC:
    """Plays one fixed joint action: an 'expert' for the climbing game's optimum (0, 0)."""

    action_selector = None

    def __init__(self, n_agents, action=0):
        self.n_agents, self.action = n_agents, action

    def init_hidden(self, batch_size):
        pass

    def select_actions(self, ep_batch, t_ep, t_env, bs=slice(None), test_mode=False):
        return th.full((ep_batch.batch_size, self.n_agents), self.action, dtype=th.long)[bs]


def write_constant_dataset(path, n_expert, n_random, episode_limit=5, seed=0):
    """Climbing episodes: n_expert playing (0, 0) labelled expert, then n_random uniformly random ones."""
    ctx = make_ctx("qmix", "climbing", epsilon_start=1.0, epsilon_finish=1.0, seed=seed,
                   env_args={"episode_limit": episode_limit})
    random_mac = ctx.runner.mac
    with DatasetWriter(path, ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args, vars(ctx.args)) as w:
        ctx.runner.mac = ConstantMAC(ctx.args.n_agents)
        for _ in range(n_expert):
            w.add(ctx.runner.run(test_mode=True), qualities="expert")
        ctx.runner.mac = random_mac
        for _ in range(n_random):
            w.add(ctx.runner.run(test_mode=False), qualities="random")
    return path


@pytest.fixture(scope="module")
def climbing_data(tmp_path_factory):
    return str(write_constant_dataset(tmp_path_factory.mktemp("data") / "climbing_mix.h5", 4, 12))


@pytest.mark.parametrize("alg", OFFLINE)
def test_every_offline_config_runs_and_writes_results(tmp_path, alg, climbing_data):
    run_main(tmp_path, alg, "climbing", *TINY, f"offline_dataset={climbing_data}")
    run_dir = sacred_dir(tmp_path, load_alg(alg)["name"], "climbing")
    info = json.load(open(os.path.join(run_dir, "info.json")))
    assert info["test_return_mean_T"] == [0, 3, 6]  # before training, every 3 steps, at the end
    assert info["dataset"]["episodes"] > 0
    assert json.load(open(os.path.join(run_dir, "run.json")))["status"] == "COMPLETED"
    assert glob.glob(os.path.join(tmp_path, "tb_logs", "*", "events.out.tfevents.*"))
    run = glob.glob(os.path.join(tmp_path, "models", "*"))[0]
    assert sorted(os.listdir(run)) == ["3", "6", "config.json"]
    assert json.load(open(os.path.join(run, "config.json")))["run"] == "offline"


def test_bc_clones_the_expert_and_50bc_filters_the_mixture(tmp_path, climbing_data):
    """BC on expert-only data and 50%BC on 4 expert + 12 random episodes both recover (0, 0): 11 per step."""
    expert = str(write_constant_dataset(tmp_path / "expert.h5", 8, 0))
    common = ["offline_steps=60", "offline_test_interval=60", "batch_size=8", "test_nepisode=2", "lr=0.01",
              "env_args.episode_limit=5"]
    run_main(tmp_path / "bc", "bc", "climbing", *common, f"offline_dataset={expert}")
    run_main(tmp_path / "bc50", "bc50", "climbing", *common, f"offline_dataset={climbing_data}",
             "offline_top_fraction=0.25")
    for name in ("bc", "bc50"):
        info = json.load(open(os.path.join(sacred_dir(tmp_path / name, name, "climbing"), "info.json")))
        assert info["test_return_mean"][-1] == pytest.approx(55.0), name


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, climbing_data):
    args = ["offline_test_interval=100", "offline_log_interval=2", "offline_save_interval=4", "batch_size=4",
            "test_nepisode=2", "env_args.episode_limit=5", f"offline_dataset={climbing_data}"]
    run_main(tmp_path / "full", "bc", "climbing", "offline_steps=8", *args)
    run_main(tmp_path / "half", "bc", "climbing", "offline_steps=4", *args)
    half = glob.glob(os.path.join(tmp_path, "half", "models", "*"))[0]
    run_main(tmp_path / "resumed", "bc", "climbing", "offline_steps=8", f"checkpoint_path={half}", *args)
    full = th.load(glob.glob(os.path.join(tmp_path, "full", "models", "*", "8", "agent.th"))[0])
    resumed = th.load(os.path.join(half, "8", "agent.th"))  # the resumed run continues in the same folder
    for k in full:
        assert th.equal(full[k], resumed[k]), k


def test_ctrl_c_saves_a_checkpoint_and_a_resume_from_it_equals_the_uninterrupted_run(tmp_path, climbing_data):
    """Ctrl-C (SIGINT to the run's process group) during offline training: the run finishes its gradient step,
    saves a checkpoint there (past its last interval checkpoint), names it and ends INTERRUPTED with exit status 130;
    resumed from it, the run ends where an uninterrupted one does, with the same weights and the same evaluations
    (the checkpoint keeps the test, log and save schedule)."""
    args = ["offline_test_interval=1000", "offline_log_interval=1000", "offline_save_interval=100000", "batch_size=4",
            "test_nepisode=2", "env_args.episode_limit=5", f"offline_dataset={climbing_data}"]
    code, out = ctrl_c_run(tmp_path / "stopped", "bc", "climbing", "offline_steps=100000000", *args,
                           ready=lambda console: "Recent Stats" in console)  # past gradient step 1000
    assert code == 130 and "Traceback" not in out, out[-3000:]
    (models,) = glob.glob(os.path.join(tmp_path, "stopped", "models", "*"))
    [stop] = checkpoint_steps(models)
    assert stop >= 1000 and "Ctrl-C: stopping after the current gradient step, then saving a checkpoint there" in out
    assert (f"Interrupted at gradient step {stop}. Last checkpoint: gradient step {stop} in {models}; resume with: "
            f"with checkpoint_path={models}") in out
    end = f"offline_steps={stop + 1500}"  # the resumed run tests and logs at 1000 steps, as the uninterrupted one
    run_main(tmp_path / "full", "bc", "climbing", end, *args)
    run_main(tmp_path / "resumed", "bc", "climbing", end, f"checkpoint_path={models}", *args)
    (full_models,) = glob.glob(os.path.join(tmp_path, "full", "models", "*"))
    assert checkpoint_steps(models) == [stop, stop + 1500] and checkpoint_steps(full_models) == [stop + 1500]
    full = th.load(os.path.join(full_models, str(stop + 1500), "agent.th"))
    resumed = th.load(os.path.join(models, str(stop + 1500), "agent.th"))
    assert all(th.equal(full[k], resumed[k]) for k in full)
    full_info, resumed_info = (json.load(open(os.path.join(sacred_dir(tmp_path / name, "bc", "climbing"),
                                                            "info.json"))) for name in ("full", "resumed"))
    tests = dict(zip(full_info["test_return_mean_T"], full_info["test_return_mean"]))
    assert resumed_info["test_return_mean_T"] == [t for t in tests if t > stop]
    assert all(tests[t] == v for t, v in zip(resumed_info["test_return_mean_T"], resumed_info["test_return_mean"]))


def test_normalised_score_is_logged(tmp_path, climbing_data):
    run_main(tmp_path, "bc", "climbing", *TINY, f"offline_dataset={climbing_data}", "reference_return_low=0",
             "reference_return_high=55")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "bc", "climbing"), "info.json")))
    np.testing.assert_allclose(info["test_normalised_score"], np.array(info["test_return_mean"]) / 55)


def test_validation_loss_is_logged(tmp_path, climbing_data):
    run_main(tmp_path, "bc", "climbing", *TINY, f"offline_dataset={climbing_data}", "offline_valid_fraction=0.25")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "bc", "climbing"), "info.json")))
    assert len(info["valid_bc_loss"]) == 3 and all(np.isfinite(info["valid_bc_loss"]))


def test_bc_beta_uses_the_expert_labelled_episodes(tmp_path, climbing_data):
    run_main(tmp_path, "bc_beta", "climbing", *TINY, f"offline_dataset={climbing_data}", "bc_beta=1.0")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "bc_beta", "climbing"), "info.json")))
    assert info["dataset"]["expert_episodes"] == 4 and info["test_return_mean"][-1] == 55.0


def test_data_keys_the_learner_never_reads_are_said_and_left_out(tmp_path, capfd, climbing_data):
    """BC with bc_beta=0 reads no expert batch, trains on no preferences and reads no rewards (reads_rewards=False):
    a run given them says so (and records no preference set; the reward label is not even looked up), so it is not
    read as one that used them."""
    run_main(tmp_path, "bc", "climbing", *TINY, f"offline_dataset={climbing_data}", "offline_expert=quality:expert",
             "preference_set=prefs", "offline_reward=label:nowhere_reward_hat")
    err = capfd.readouterr().err
    assert "offline_expert=quality:expert is not used: learner 'bc_learner' trains on data only" in err
    assert "preference_set=prefs is not used" in err
    assert ("offline_reward=label:nowhere_reward_hat is not used: learner 'bc_learner' does not train on rewards "
            "(omar and omiga do); it is left out of this run") in err
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "bc", "climbing"), "info.json")))
    assert "preferences" not in info


def test_missing_dataset_is_a_clear_error(tmp_path, capsys, climbing_data):
    run_main(tmp_path, "bc", "climbing", *TINY, expect=2)  # a config error: one line, no run folder
    err = capsys.readouterr().err
    assert "config error: run=offline needs a dataset" in err and "Traceback" not in err
    assert not glob.glob(os.path.join(tmp_path, "sacred", "bc", "*", "[0-9]*"))
    # a dataset file that is not there, as offline_dataset or as offline_expert: the same user error, a dataset error
    # (one line, exit 2), whose run folder records a failure that a sweep does not retry (the file will not appear)
    for alg, update, said in (("bc", f"offline_dataset={tmp_path}/nope.h5", f"offline dataset {tmp_path}/nope.h5"),
                              ("bc_beta", f"offline_expert={tmp_path}/nope_expert.h5",
                               f"offline_expert={tmp_path}/nope_expert.h5")):
        run_main(tmp_path, alg, "climbing", *TINY, f"offline_dataset={climbing_data}", update, expect=2)
        err = capsys.readouterr().err
        assert f"dataset error: {said} does not exist" in err
        assert "Traceback" not in err
        runs = sorted(glob.glob(os.path.join(tmp_path, "sacred", alg, "*", "[0-9]*")))
        failure = json.load(open(os.path.join(runs[-1], "info.json")))["failure"]
        assert failure["error"] == "DatasetMissing" and failure["repeats_on_retry"] is True


def test_dataset_of_another_env_is_refused(tmp_path, capsys, climbing_data):
    run_main(tmp_path, "bc", "penalty", *TINY, f"offline_dataset={climbing_data}", expect=2)
    err = capsys.readouterr().err
    # a dataset error: its one line, no traceback; the run folder records the failure (a sweep does not retry it)
    assert "dataset error:" in err and "expected 'penalty'" in err and "Traceback" not in err


def test_bc_beta_without_expert_episodes_is_a_clear_error(tmp_path, capsys):
    path, _ = write_random_dataset(str(tmp_path / "random.h5"), "climbing", 4, env_args={"episode_limit": 5})
    run_main(tmp_path, "bc_beta", "climbing", *TINY, f"offline_dataset={path}", expect=2)
    assert "no episode in the dataset has all agents 'expert'" in capsys.readouterr().err


def test_an_online_learner_is_refused_by_the_offline_loop(tmp_path, capsys):
    """Learners declare `offline` (learners.base): the loop reads it instead of failing somewhere inside."""
    run_main(tmp_path, "qmix", "climbing", "run=offline", "offline_dataset=nothing.h5", expect=1)
    assert "trains from its own rollouts, not from datasets" in capsys.readouterr().err


def test_an_offline_learner_is_refused_by_the_online_loop(tmp_path, capsys):
    """Offline learners have no replay buffer (uses_replay_buffer): the online loop says so before it starts."""
    run_main(tmp_path, "bc", "climbing", "run=online", "t_max=10", expect=1)
    assert "trains from datasets, not from its own rollouts: use run: offline" in capsys.readouterr().err


def test_merged_datasets_are_hashed_only_when_their_summaries_agree(tmp_path, climbing_data, monkeypatch):
    """check_distinct compares env, shapes, episode counts, returns and qualities first: datasets that differ there
    are never hashed; equal summaries are hashed, and a copy is still refused while other episodes pass."""
    from types import SimpleNamespace

    from offline import OfflineDataset, sampling
    from utils.config import ConfigError

    hashed = []
    real = sampling.content_fingerprint
    monkeypatch.setattr(sampling, "content_fingerprint", lambda ds: hashed.append(ds.path) or real(ds))
    ds = OfflineDataset.load(climbing_data)
    other, _ = write_random_dataset(str(tmp_path / "other.h5"), "climbing", 6, env_args={"episode_limit": 5})
    arrays = ds.arrays()
    arrays["obs"][0, 0] += 1.0  # the same returns and qualities, other observations: only the hash tells them apart
    look_alike = str(tmp_path / "look_alike.h5")
    OfflineDataset._from_arrays(arrays, dict(ds.attrs), ds.quality_codes).save(look_alike)
    args = SimpleNamespace(env="matrix_game", env_args=json.loads(ds.attrs["env_args"]), offline_lazy=True,
                           offline_reward="", offline_expert="", offline_top_fraction=1.0, offline_valid_fraction=0,
                           offline_dataset=[climbing_data, other])
    env_info = dict(ds.env_info)
    sampling.load_training_data(args, env_info, logging.getLogger("test"))
    assert hashed == []  # 16 and 6 episodes: different fingerprints without reading an episode
    args.offline_dataset = [climbing_data, other, look_alike]
    sampling.load_training_data(args, env_info, logging.getLogger("test"))
    assert sorted(hashed) == sorted([climbing_data, look_alike])  # the two with one summary, not `other`
    hashed.clear()
    copy = str(tmp_path / "copy.h5")
    shutil.copyfile(climbing_data, copy)
    args.offline_dataset = [other, climbing_data, copy]
    with pytest.raises(ConfigError, match="hold the same episodes"):
        sampling.load_training_data(args, env_info, logging.getLogger("test"))
    assert sorted(hashed) == sorted([climbing_data, copy])


def test_dataset_paths_name_what_to_give(tmp_path, climbing_data):
    """An un-quoted list, a folder, a copy or a drop_episodes file of a listed dataset, a mistyped offline_expert:
    config errors saying what to give."""
    import shutil
    from types import SimpleNamespace

    from offline import DatasetError, OfflineDataset
    from offline.sampling import dataset_paths, load_training_data, select_expert
    from utils.config import ConfigError

    with pytest.raises(ConfigError, match=r"reached the run as one path.*\"offline_dataset=\['a.h5', 'b.h5'\]\""):
        dataset_paths("[a.h5,b.h5]")
    with pytest.raises(ConfigError, match=r"is a folder; give a dataset file in it, e.g. .*climbing_mix.h5"):
        dataset_paths(os.path.dirname(climbing_data))
    copy = str(tmp_path / "copy.h5")
    shutil.copyfile(climbing_data, copy)
    dropped = str(tmp_path / "dropped.h5")
    ds = OfflineDataset.load(climbing_data)
    ds.subset(np.arange(1, len(ds))).save(dropped, attrs={"dropped_episodes": json.dumps(
        {"source": os.path.abspath(climbing_data), "episodes": [0]})})
    args = SimpleNamespace(env="matrix_game", env_args=json.loads(ds.attrs["env_args"]), offline_lazy=False,
                           offline_reward="", offline_expert="", offline_top_fraction=1.0, offline_valid_fraction=0)
    env_info = {k: ds.env_info[k] for k in ds.env_info}
    for other, match in ((copy, "hold the same episodes"), (dropped, "drop_episodes.py made from it")):
        args.offline_dataset = [climbing_data, other]
        with pytest.raises(ConfigError, match=match):
            load_training_data(args, env_info, None)
    with pytest.raises(DatasetError, match=r"offline_expert=quality_expert does not exist: offline_expert is "
                                           r"quality:<name>.*did you mean 'quality:expert'"):
        select_expert(ds, "quality_expert", args, {})
