"""What a resume refuses before the run starts (t_max not past the checkpoint, another env or env_args), what it
says (changed settings, the end's summary), and what a failed or interrupted run leaves in its folder (cout.txt,
metrics up to each checkpoint, the resume key after Ctrl-C)."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import SRC_MAIN, run_main, sacred_dir

TINY = ["env_args.episode_limit=5", "test_nepisode=2", "test_interval=60", "log_interval=60", "runner_log_interval=60",
        "learner_log_interval=60", "save_model_interval=60", "use_tensorboard=False", "batch_size=4", "buffer_size=8"]


def read(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f) if name.endswith(".json") else f.read()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A vdn run on the penalty matrix game to t_env 125 (checkpoints 5, 65, 125)."""
    results = tmp_path_factory.mktemp("first")
    run_main(results, "vdn", "matrix_game", *TINY, "t_max=120")
    return glob.glob(str(results / "models" / "*"))[0]


@pytest.mark.parametrize("updates, env, message", [
    (["t_max=125"], "matrix_game", "t_max=125 does not go past the checkpoint's t_env 125"),
    (["t_max=100"], "matrix_game", "give t_max greater than 125"),
    (["t_max=300"], "climbing", "trained on env_args.game penalty (this run: climbing)"),
    (["t_max=300", "env_args.episode_limit=7"], "matrix_game", "env_args.episode_limit 5 (this run: 7)"),
])
def test_a_resume_that_cannot_continue_is_refused_before_the_run(tmp_path, capsys, models, updates, env, message):
    run_main(tmp_path, "vdn", env, *TINY, f"checkpoint_path={models}", *updates, expect=2)
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "sacred")


def test_a_retry_with_the_runs_own_budget_finishes_it(tmp_path, models):
    """A run (or a sweep trial) that died after its last checkpoint, already past its t_max, is finished by the same
    command: nothing left to train, and it completes (its curve is the earlier segment's: the results tools chain
    them)."""
    run_main(tmp_path, "vdn", "matrix_game", *TINY, f"checkpoint_path={models}", "t_max=120")
    (run,) = glob.glob(str(tmp_path / "sacred" / "*" / "*" / "[0-9]*"))
    assert read(run, "run.json")["status"] == "COMPLETED" and read(run, "info.json")["resumed_from"]


def test_a_raised_budget_is_the_one_a_retry_finishes_with(tmp_path):
    """Review finding: the model folder's config.json keeps the first t_max; the checkpoint's own config holds the
    raised one, and a retry with it completes."""
    run_main(tmp_path / "a", "vdn", "matrix_game", *TINY, "t_max=60")
    (models,) = glob.glob(str(tmp_path / "a" / "models" / "*"))
    run_main(tmp_path / "b", "vdn", "matrix_game", *TINY, f"checkpoint_path={models}", "t_max=120")
    run_main(tmp_path / "c", "vdn", "matrix_game", *TINY, f"checkpoint_path={models}", "t_max=120")
    (run,) = glob.glob(str(tmp_path / "c" / "sacred" / "*" / "*" / "[0-9]*"))
    assert read(run, "run.json")["status"] == "COMPLETED"


def test_evaluating_on_another_env_of_the_same_shapes_stays_possible(tmp_path, models):
    run_main(tmp_path, "vdn", "climbing", *TINY, "evaluate=True", f"checkpoint_path={models}")


def test_evaluating_without_a_checkpoint_is_a_config_error(tmp_path, capsys):
    run_main(tmp_path, "vdn", "matrix_game", *TINY, "evaluate=True", expect=2)
    assert "needs a trained model: give checkpoint_path=" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "sacred")


def test_changed_settings_are_said_and_the_summary_counts_this_session(tmp_path, capsys, models):
    capsys.readouterr()
    run_main(tmp_path, "vdn", "matrix_game", *TINY, "t_max=240", "lr=0.001", "gamma=0.9", "save_model=False",
             f"checkpoint_path={models}")
    err = capsys.readouterr().err
    assert "Resuming with settings changed from the checkpoint's: gamma 0.99 -> 0.9, lr 0.0005 -> 0.001" in err
    assert "(seed 3; save_model=False: no checkpoints)" in err and "checkpoints go to" not in err
    run = sacred_dir(tmp_path, "vdn", "penalty")
    assert read(run, "info.json")["resumed_from"]["changed"] == {"gamma": [0.99, 0.9], "lr": [0.0005, 0.001]}
    done = [line for line in err.splitlines() if "Finished training" in line][0]
    steps, updates = map(int, done.split("Finished training: ")[1].split(" updates")[0].split(" env steps and "))
    assert steps == 120 and "the run is at t_env 245 with" in done
    total = int(done.split(" with ")[1].split(" updates")[0])
    assert 0 < updates < total


def test_metrics_cover_every_checkpoint(tmp_path, monkeypatch):
    """metrics.json and info.json are written at each checkpoint (not only at Sacred's 10 s heartbeat), so a run
    killed after a checkpoint and resumed from it has no gap in its metrics."""
    from run import loop

    seen, save = [], loop.save

    def checked(ctx, step, run_state, _log, buffer=None):
        path = save(ctx, step, run_state, _log, buffer)
        run = ctx.sacred_run["dir"]
        seen.append((step, max(read(run, "metrics.json")["test_return_mean"]["steps"]),
                     max(read(run, "info.json")["test_return_mean_T"])))
        return path

    monkeypatch.setattr(loop, "save", checked)
    run_main(tmp_path, "vdn", "matrix_game", *TINY, "t_max=120")
    assert [s for s, _, _ in seen] == [5, 65, 125] and all(m == step == i for step, m, i in seen)


def test_a_failed_run_keeps_its_console_and_error_in_cout(tmp_path, monkeypatch):
    import run.online

    def boom(ctx, _log):
        _log.info("training would start here")
        raise RuntimeError("boom")

    monkeypatch.setattr(run.online, "_train", boom)
    run_main(tmp_path, "vdn", "matrix_game", *TINY, "t_max=120", expect=1)
    run = sacred_dir(tmp_path, "vdn", "penalty")
    cout = read(run, "cout.txt")
    assert read(run, "run.json")["status"] == "FAILED"
    assert "Experiment parameters" in cout and "training would start here" in cout
    assert "RuntimeError: boom" in cout and cout.rstrip().endswith("FAILED")


def test_ctrl_c_names_the_last_checkpoint_and_the_resume_key(tmp_path):
    cmd = [sys.executable, SRC_MAIN, "--config=vdn", "--env-config=matrix_game", "with",
           f"local_results_path={tmp_path}", "seed=3", *TINY, "t_max=10000000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / "models" / "*" / "65")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    models = glob.glob(str(tmp_path / "models" / "*"))[0]
    last = max(int(d) for d in os.listdir(models) if d.isdigit())
    line = f"Last checkpoint: t_env {last} in {models}; resume with: with checkpoint_path={models}"
    assert "Interrupted at t_env" in out and line in out and "Traceback" not in out
    run = sacred_dir(tmp_path, "vdn", "penalty")
    assert read(run, "run.json")["status"] == "INTERRUPTED"
    cout = read(run, "cout.txt")
    assert "Experiment parameters" in cout and line in cout and "Run ended: INTERRUPTED" in cout
