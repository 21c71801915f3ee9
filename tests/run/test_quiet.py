"""Quiet where nothing is wrong: the CPU fallback of the default use_cuda is an info line of the run's header (and
info.json's `device`), a warning only when use_cuda=True was asked for; save_replay_buffer keeps one buffer, in the
run's latest checkpoint, and says so once."""
import glob
import json
import logging
import os

import pytest
import torch as th

from helpers import FakeSacredRun, run_main, sacred_dir
from run.setup import select_device
from utils import checkpoint
from utils.checkpoint import BUFFER, load_buffer, save_checkpoint

TINY = ["t_max=60", "env_args.episode_limit=5", "test_nepisode=2", "test_interval=30", "log_interval=30",
        "runner_log_interval=30", "learner_log_interval=30", "batch_size=4", "buffer_size=8",
        "use_tensorboard=False"]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(th.cuda, "is_available", lambda: False)


def device_records(caplog, config, run):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test_device"):
        select_device(config, logging.getLogger("test_device"), run)
    return [(r.levelname, r.getMessage()) for r in caplog.records]


def test_cpu_fallback_of_the_default_is_one_info_line(no_cuda, caplog):
    run = FakeSacredRun()
    config = {"use_cuda": True}
    records = device_records(caplog, config, run)
    assert [level for level, _ in records] == ["INFO"]
    assert records[0][1].startswith("Device: cpu (CUDA is not available")
    assert config["use_cuda"] is False
    assert run.info["device"] == {"device": "cpu", "use_cuda": True, "cuda_available": False}

    run.meta_info = {"config_updates": {"use_cuda": True}}  # use_cuda=True given on the command line
    records = device_records(caplog, {"use_cuda": True}, run)
    assert [level for level, _ in records] == ["WARNING"] and "use_cuda=True was given" in records[0][1]

    records = device_records(caplog, {"use_cuda": False}, None)
    assert records == [("INFO", "Device: cpu (use_cuda=False)")]


def test_a_cpu_run_warns_only_when_asked_for_cuda(tmp_path, no_cuda, capsys):
    run_main(tmp_path / "default", "qmix", "matrix_game", *TINY, "save_model=False")
    err = capsys.readouterr().err
    assert not [line for line in err.splitlines() if "WARNING" in line and "CUDA" in line]
    assert err.count("Device: cpu") == 1 and "CUDA is not available" in err
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "default", "qmix", "penalty"), "info.json")))
    assert info["device"]["device"] == "cpu"

    run_main(tmp_path / "asked", "qmix", "matrix_game", *TINY, "save_model=False", "use_cuda=True")
    err = capsys.readouterr().err
    assert "[WARNING" in err and "use_cuda=True was given but CUDA is not available" in err


def test_replay_buffer_is_kept_in_the_latest_checkpoint_only(tmp_path, capsys):
    run_main(tmp_path, "qmix", "matrix_game", *TINY, "save_model_interval=20", "save_replay_buffer=True")
    err = capsys.readouterr().err
    run_dir = glob.glob(str(tmp_path / "models" / "*"))[0]
    steps = checkpoint.checkpoint_steps(run_dir)
    assert len(steps) >= 3
    with_buffer = [s for s in steps if os.path.isfile(os.path.join(run_dir, str(s), BUFFER))]
    assert with_buffer == [steps[-1]]
    assert load_buffer(os.path.join(run_dir, str(steps[-1])))["episodes_in_buffer"] > 0
    assert "buffer" not in th.load(os.path.join(run_dir, str(steps[-1]), "run_state.th"), weights_only=True)
    assert err.count("the replay buffer (up to 8 episodes) is saved with the latest checkpoint only") == 1

    # the run resumes from its latest checkpoint with the buffer
    run_main(tmp_path / "resumed", "qmix", "matrix_game", *TINY, "t_max=80", "save_replay_buffer=True",
             f"checkpoint_path={run_dir}")
    assert "checkpoint has no replay buffer" not in capsys.readouterr().err


class Learner:
    def __init__(self, fail=False):
        self.fail = fail

    def save_models(self, path):
        th.save({"w": th.zeros(2)}, os.path.join(path, "agent.th"))
        if self.fail:
            raise OSError("disk full")


def test_an_older_buffer_goes_only_once_the_newer_checkpoint_is_complete(tmp_path):
    run = tmp_path / "models" / "run"
    save_checkpoint(Learner(), str(run / "10"), {"t_env": 10}, buffer={"episodes_in_buffer": 1})
    with pytest.raises(OSError):  # a save that fails midway leaves the older buffer where it was
        save_checkpoint(Learner(fail=True), str(run / "20"), {"t_env": 20}, buffer={"episodes_in_buffer": 2})
    assert load_buffer(str(run / "10")) == {"episodes_in_buffer": 1}
    assert sorted(os.listdir(run)) == ["10"]

    save_checkpoint(Learner(), str(run / "20"), {"t_env": 20}, buffer={"episodes_in_buffer": 2})
    assert load_buffer(str(run / "10")) is None and load_buffer(str(run / "20")) == {"episodes_in_buffer": 2}
    assert os.path.isfile(run / "10" / "agent.th")  # the older checkpoint itself stays

    # resuming from 20 and saving 15 (a run continued from an earlier checkpoint) leaves the newer 20's buffer
    save_checkpoint(Learner(), str(run / "15"), {"t_env": 15}, buffer={"episodes_in_buffer": 3})
    assert load_buffer(str(run / "20")) == {"episodes_in_buffer": 2}
    # a checkpoint saved without a buffer deletes none
    save_checkpoint(Learner(), str(run / "30"), {"t_env": 30})
    assert load_buffer(str(run / "20")) is not None
