"""End-to-end runs through src/main.py (Sacred, observers, TensorBoard, checkpoints) on tiny settings."""
import glob
import json
import os

import pytest
import torch as th

from helpers import run_main, sacred_dir
from utils.config import available, load_alg

TINY = ["t_max=120", "env_args.episode_limit=5", "test_nepisode=2", "test_interval=60", "log_interval=60",
        "runner_log_interval=60", "learner_log_interval=60", "save_model_interval=60", "batch_size=4",
        "buffer_size=8"]
ON_POLICY = ("ippo", "mappo", "ippo_ns", "mappo_ns", "ia2c", "maa2c")


# training configs (qllm_generate is a generation run, tested with a scripted LLM in tests/qllm/test_loop.py)
TRAINING = [a for a in available("algs") if load_alg(a).get("run", "online") == "online"]


@pytest.mark.parametrize("alg", TRAINING)
def test_every_algorithm_config_runs_and_writes_results(tmp_path, alg):
    extra = ["epsilon_anneal_time=100"]
    if alg in ON_POLICY:
        extra = ["batch_size_run=2", "batch_size=2", "buffer_size=2"]
    run_main(tmp_path, alg, "matrix_game", *TINY, *extra)
    run_dir = sacred_dir(tmp_path, alg, "penalty")
    for f in ("config.json", "run.json", "metrics.json", "info.json"):
        assert os.path.isfile(os.path.join(run_dir, f)), f
    info = json.load(open(os.path.join(run_dir, "info.json")))
    assert info["test_return_mean_T"][0] <= 10 and len(info["test_return_mean"]) >= 2  # tested from the start
    assert json.load(open(os.path.join(run_dir, "run.json")))["status"] == "COMPLETED"
    assert glob.glob(os.path.join(tmp_path, "tb_logs", "*", "events.out.tfevents.*"))
    models = glob.glob(os.path.join(tmp_path, "models", "*", "*", "agent.th"))
    assert len(models) >= 2  # first iteration + end


def test_pymarl_alias_on_the_command_line(tmp_path):
    run_main(tmp_path, "vdn", "matrix_game", *TINY, "rnn_hidden_dim=16", "target_update_interval=10")
    cfg = json.load(open(os.path.join(sacred_dir(tmp_path, "vdn", "penalty"), "config.json")))
    assert cfg["hidden_dim"] == 16 and cfg["target_update_interval_or_tau"] == 10
    agent = th.load(glob.glob(os.path.join(tmp_path, "models", "*", "*", "agent.th"))[0])
    assert agent["fc1.weight"].shape[0] == 16


def test_evaluate_refuses_to_train_without_checkpoint(tmp_path, capsys):
    """A config error before the run starts: no run folder, no models."""
    run_main(tmp_path, "qmix", "matrix_game", *TINY, "evaluate=True", expect=2)
    assert "needs a trained model: give checkpoint_path=" in capsys.readouterr().err
    assert not glob.glob(os.path.join(tmp_path, "models", "*"))
    assert not os.path.exists(os.path.join(tmp_path, "sacred"))


def test_evaluate_from_checkpoint(tmp_path):
    run_main(tmp_path / "train", "qmix", "matrix_game", *TINY)
    ckpt = glob.glob(os.path.join(tmp_path, "train", "models", "*"))[0]
    run_main(tmp_path / "eval", "qmix", "matrix_game", *TINY, "evaluate=True", f"checkpoint_path={ckpt}")
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "eval", "qmix", "penalty"), "info.json")))
    assert len(info["test_return_mean"]) == 1 and info["test_return_mean_T"] == [125]
    assert not glob.glob(os.path.join(tmp_path, "eval", "models", "*"))  # nothing trained or saved


def test_unknown_env_name_fails_with_valid_names(tmp_path, capsys):
    # a config error, found before the run starts (issue 12): exit status 2 and no run folder (it was 1, a FAILED run)
    run_main(tmp_path, "qmix", "matrix_game", "env=not_an_env", expect=2)
    assert "Valid envs" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(tmp_path, "sacred"))


@pytest.mark.parametrize("alg,updates", [
    ("qmix", ["agent=mlp", "epsilon_anneal_time=100"]),
    ("qmix", ["use_rnn=True", "obs_last_action=True", "td_lambda=0.6", "optimizer=rmsprop",
              "target_update_interval_or_tau=0.05", "epsilon_anneal_time=100"]),
    ("mappo", ["action_selector=multinomial", "batch_size_run=2", "batch_size=2", "buffer_size=2"]),
    ("qmix", ["run=evaluate", "epsilon_anneal_time=100"]),
])
def test_other_registry_entries_and_options(tmp_path, alg, updates):
    if "run=evaluate" in updates:  # the run REGISTRY's evaluate entry, given a checkpoint
        run_main(tmp_path / "train", alg, "matrix_game", *TINY, "epsilon_anneal_time=100")
        ckpt = glob.glob(os.path.join(tmp_path, "train", "models", "*"))[0]
        updates = [*updates, f"checkpoint_path={ckpt}"]
    run_main(tmp_path, alg, "matrix_game", *TINY, *updates)


def test_mongo_observer_records_run_and_metrics(tmp_path):
    import mongomock
    import mongomock.gridfs

    from main import make_experiment
    from utils.config import build_config

    mongomock.gridfs.enable_gridfs_integration()
    client = mongomock.MongoClient()
    config = build_config("vdn", "matrix_game", {"mongo_url": "mongodb://example:27017", "mongo_db": "marl",
                                                 "local_results_path": str(tmp_path), "seed": 1,
                                                 "use_tensorboard": False, "save_model": False,
                                                 "t_max": 60, "test_interval": 30, "log_interval": 30,
                                                 "runner_log_interval": 30, "learner_log_interval": 30,
                                                 "env_args": {"episode_limit": 5}, "batch_size": 4})
    config["name"] = "vdn"
    ex = make_experiment(config, mongo_client_factory=lambda url: client)
    run = ex.run()
    assert run.status == "COMPLETED"
    doc = client["marl"]["runs"].find_one()
    assert doc["status"] == "COMPLETED" and doc["config"]["mixer"] == "vdn"
    names = {m["name"] for m in client["marl"]["metrics"].find()}
    assert {"test_return_mean", "return_mean"} <= names


def test_a_resumed_mongo_run_is_chained_with_the_run_it_continues(tmp_path):
    """utils.runs chains Mongo runs as it chains FileStorage folders: the checkpoint records the Mongo database and
    the run's Mongo id (the FileStorage folder is named after it too), and the resumed run's document leads back to
    the one that saved the checkpoint; that one is then a segment, not a run of its own."""
    import mongomock
    import mongomock.gridfs

    from main import make_experiment
    from utils.config import build_config
    from utils.runs import find_mongo_runs

    mongomock.gridfs.enable_gridfs_integration()
    client = mongomock.MongoClient()
    settings = {"mongo_url": "mongodb://example:27017", "mongo_db": "marl", "local_results_path": str(tmp_path),
                "seed": 1, "use_tensorboard": False, "test_interval": 30, "log_interval": 30,
                "runner_log_interval": 30, "learner_log_interval": 30, "save_model_interval": 30,
                "env_args": {"episode_limit": 5}, "batch_size": 4, "buffer_size": 8}
    runs = []
    for extra in ({"t_max": 60}, {"t_max": 120, "checkpoint_path": None}):
        if "checkpoint_path" in extra:
            extra["checkpoint_path"] = glob.glob(os.path.join(tmp_path, "models", "*"))[0]
        config = build_config("vdn", "matrix_game", {**settings, **extra})
        config["name"] = "vdn"
        runs.append(make_experiment(config, mongo_client_factory=lambda url: client).run())
    assert [r.status for r in runs] == ["COMPLETED", "COMPLETED"]
    first, second = (r._id for r in runs)
    assert os.path.basename(runs[0].observers[-1].dir) == str(first)  # the folder is named after the Mongo id
    db = client["marl"]
    assert db["runs"].find_one({"_id": second})["info"]["resumed_from"]["sacred_run"]["mongo_db"] == "marl"

    found, skipped = find_mongo_runs(db, "test_return_mean")
    assert skipped == []
    [run] = found
    assert run.path == f"mongo://marl/{second}" and run.segments == (f"mongo://marl/{first}",)
    assert run.T[0] == 5 and run.T[-1] >= 120 and list(run.T) == sorted(set(run.T))
    # a checkpoint saved by a run this database did not record (no mongo_db) is not followed to an unrelated id
    db["runs"].update_one({"_id": second}, {"$unset": {"info.resumed_from.sacred_run.mongo_db": ""}})
    assert len(find_mongo_runs(db, "test_return_mean")[0]) == 2


def test_run_mode_names_what_the_user_asked_for():
    """--config=qllm_generate starts run mode `qllm_generate`; the earlier name `tfcaf` stays an alias."""
    from run import REGISTRY
    from utils.config import build_config

    assert build_config("qllm_generate", "climbing")["run"] == "qllm_generate"
    assert REGISTRY["tfcaf"] is REGISTRY["qllm_generate"]
