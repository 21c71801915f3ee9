"""What a trial's Sacred run says of its progress (sweeps/manifest.py)."""
import glob
import json
import os

from helpers import run_main, sacred_dir
from sweeps.manifest import run_progress


def test_a_finished_runs_t_env_is_where_it_ended_and_its_metric_the_last_logged(tmp_path):
    """The logged series stop at the last log interval (t_env 100 here); the run goes on past t_max (to 125, where
    its final checkpoint is)."""
    run_main(tmp_path, "qmix", "matrix_game", "t_max=100", "test_interval=60", "log_interval=60",
             "runner_log_interval=60", "learner_log_interval=60", "test_nepisode=2", "batch_size=4",
             "buffer_size=8", "use_tensorboard=False")
    run = sacred_dir(tmp_path, "qmix", "penalty")
    info = json.load(open(os.path.join(run, "info.json")))
    final_checkpoint = max(int(os.path.basename(d)) for d in glob.glob(str(tmp_path / "models" / "*" / "[0-9]*")))
    assert max(info["episode_T"] + info["test_return_mean_T"]) < final_checkpoint
    assert run_progress(run, "test_return_mean") == (final_checkpoint, info["test_return_mean"][-1])
