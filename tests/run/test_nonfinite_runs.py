"""A run whose learner hits a NaN/inf ends FAILED with a non-zero exit, names the last good checkpoint and saves
nothing after it; with on_nonfinite=skip_batch it completes and logs the skips."""
import glob
import json
import os
import re

import torch as th

from helpers import run_main, sacred_dir, write_random_dataset

TINY = ["t_max=60", "env_args.episode_limit=5", "test_nepisode=1", "test_interval=60", "log_interval=60",
        "runner_log_interval=60", "learner_log_interval=60", "save_model_interval=10", "batch_size=2",
        "buffer_size=4", "use_tensorboard=False", "lr=1e30"]  # the second update meets inf/NaN


def run_json(tmp_path, name, env_label):
    return json.load(open(os.path.join(sacred_dir(tmp_path, name, env_label), "run.json")))


def saved_steps(tmp_path):
    return sorted(int(os.path.basename(d)) for d in glob.glob(os.path.join(tmp_path, "models", "*", "[0-9]*")))


def test_online_run_with_nan_fails_and_names_the_last_checkpoint(tmp_path, capsys):
    run_main(tmp_path, "qmix", "matrix_game", *TINY, expect=1)
    run = run_json(tmp_path, "qmix", "penalty")
    assert run["status"] == "FAILED"
    trace = "".join(run["fail_trace"])
    assert "NonFiniteError" in trace and "QLearner (qmix): non-finite loss" in trace
    fail_step = int(re.search(r"at t_env (\d+)", trace).group(1))
    last = re.search(r"Last good checkpoint: (\S+)", trace).group(1)
    assert os.path.isfile(os.path.join(last, "agent.th"))
    steps = saved_steps(tmp_path)
    assert steps and max(steps) < fail_step and last.endswith(os.sep + str(max(steps)))  # none after the NaN
    assert "non-finite loss" in capsys.readouterr().err
    # recorded for a sweep, which does not retry a trial whose rerun would replay the same NaN (sweeps.trial)
    failure = json.load(open(os.path.join(sacred_dir(tmp_path, "qmix", "penalty"), "info.json")))["failure"]
    assert failure["error"] == "NonFiniteError" and failure["repeats_on_retry"] is True
    assert "QLearner (qmix): non-finite loss" in failure["message"] and last in failure["message"]


def test_without_checkpoints_the_message_says_so(tmp_path):
    run_main(tmp_path, "qmix", "matrix_game", *TINY, "save_model=False", expect=1)
    trace = "".join(run_json(tmp_path, "qmix", "penalty")["fail_trace"])
    assert "No checkpoint was saved in this run (save_model=False or none yet)" in trace
    assert not saved_steps(tmp_path)


def test_skip_batch_run_completes_and_logs_the_skips(tmp_path):
    run_main(tmp_path, "qmix", "matrix_game", *TINY, "on_nonfinite=skip_batch")
    run_dir = sacred_dir(tmp_path, "qmix", "penalty")
    assert json.load(open(os.path.join(run_dir, "run.json")))["status"] == "COMPLETED"
    skips = json.load(open(os.path.join(run_dir, "info.json")))["nonfinite_skips"]
    assert skips[0] == 1 and skips == sorted(skips) and len(skips) >= 2
    for f in glob.glob(os.path.join(tmp_path, "models", "*", "*", "agent.th")):
        assert all(th.isfinite(v).all() for v in th.load(f).values())


def test_offline_run_with_nan_fails_at_its_gradient_step(tmp_path):
    data, _ = write_random_dataset(str(tmp_path / "data.h5"), "climbing", 4, env_args={"episode_limit": 5})
    run_main(tmp_path, "bc", "climbing", f"offline_dataset={data}", "offline_steps=5", "offline_test_interval=5",
             "offline_log_interval=5", "offline_save_interval=1", "batch_size=2", "test_nepisode=1",
             "env_args.episode_limit=5", "use_tensorboard=False", "agent=mlp", "lr=1e30", expect=1)
    run = run_json(tmp_path, "bc", "climbing")
    assert run["status"] == "FAILED"
    trace = "".join(run["fail_trace"])
    assert "BCLearner (bc): non-finite " in trace and "at gradient step 1" in trace
    assert re.search(r"Last good checkpoint: \S+" + re.escape(os.sep) + r"1\b", trace)
    assert saved_steps(tmp_path) == [1]  # the step-1 update failed: nothing saved after it
