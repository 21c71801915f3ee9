"""What a resume refuses before the run starts (t_max not past the checkpoint, another env or env_args), what it
says (changed settings, the end's summary), and what a failed or interrupted run leaves in its folder (cout.txt,
metrics up to each checkpoint, the resume key after Ctrl-C)."""
import glob
import json
import os
import shutil
import signal

import pytest
from test_resume import FILES, SETTINGS, assert_same, load_all

from helpers import ctrl_c_run, run_main, sacred_dir
from utils.checkpoint import checkpoint_steps

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


@pytest.mark.parametrize("content, says", [
    (b"hello", "is not a checkpoint file: torch.save did not write it (it holds text: 'hello')"),
    (b"step 125: loss 0.1\n", "is not a checkpoint file: torch.save did not write it (it holds text"),
    (b"PK\x03\x04cut", "is damaged: cut short or corrupted"),
])
def test_a_damaged_checkpoint_file_is_named_in_one_line_before_training(tmp_path, capsys, models, content, says):
    """A checkpoint file that is not one (a text file, 5 bytes) or cut short: one line naming the file, what is wrong
    and the load_step of the checkpoint before it; exit status 2 and no run folder, as a config error."""
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    (copy / "125" / "agent.th").write_bytes(content)
    capsys.readouterr()
    run_main(tmp_path, "vdn", "matrix_game", *TINY, f"checkpoint_path={copy}", "t_max=300", expect=2)
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "checkpoint error:" in x]
    assert len(line) == 1 and f"checkpoint file {copy / '125' / 'agent.th'} {says}" in line[0], err[-2000:]
    assert f"to resume from the previous checkpoint instead, pass checkpoint_path={copy} load_step=65" in line[0]
    assert "Traceback" not in err and not os.path.exists(tmp_path / "sacred")


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
    assert "RuntimeError: boom" in cout and cout.endswith(f"\nRun {os.path.basename(run)} FAILED\n")


def test_ctrl_c_saves_a_checkpoint_where_it_stops_names_it_and_it_resumes(tmp_path):
    """Ctrl-C in a terminal (SIGINT to the whole process group, so the parallel runner's worker gets it too): the run
    finishes its rollout and updates, saves a checkpoint there, past its last interval checkpoint, names it with the
    resume key and ends INTERRUPTED with exit status 130 and no traceback (the worker ignored the signal); a resume
    from that checkpoint runs."""
    settings = [s for s in TINY if not s.startswith("save_model_interval")] + [
        "runner=parallel", "batch_size_run=2", "n_workers=1", "save_model_interval=100000"]
    # the second summary (t_env 70 or later) comes well after the first checkpoint (t_env 10)
    code, out = ctrl_c_run(tmp_path, "vdn", "matrix_game", *settings, "t_max=10000000",
                           ready=lambda console: console.count("Recent Stats") >= 2)
    assert code == 130, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    (models,) = glob.glob(str(tmp_path / "models" / "*"))
    steps = checkpoint_steps(models)
    last = steps[-1]
    assert steps == [10, last] and last >= 70
    assert "Ctrl-C: stopping after the current rollout and its updates, then saving a checkpoint there" in out
    line = f"Interrupted at t_env {last}. Last checkpoint: t_env {last} in {models}; resume with: with " \
           f"checkpoint_path={models}"
    assert line in out
    run = sacred_dir(tmp_path, "vdn", "penalty")
    assert read(run, "run.json")["status"] == "INTERRUPTED"
    assert max(read(run, "metrics.json")["return_mean"]["steps"]) <= last  # the records reach the checkpoint
    cout = read(run, "cout.txt")
    assert "Experiment parameters" in cout and line in cout and "Run ended: INTERRUPTED" in cout

    run_main(tmp_path / "resumed", "vdn", "matrix_game", *settings, f"checkpoint_path={models}", f"t_max={last + 20}")
    resumed = sacred_dir(tmp_path / "resumed", "vdn", "penalty")
    assert read(resumed, "run.json")["status"] == "COMPLETED"
    assert read(resumed, "info.json")["resumed_from"]["step"] == last
    assert checkpoint_steps(models)[-1] == last + 30  # it went on in the same folder


def test_sigterm_stops_as_a_ctrl_c_does_with_exit_status_143_and_it_resumes(tmp_path):
    """SIGTERM to the whole process group, as `timeout` and a scheduler's cancel or preemption send it (the parallel
    runner's worker gets it too and leaves it to the run): the run stops as at a Ctrl-C, with a checkpoint where it
    stops, recorded INTERRUPTED, cout.txt ending with how, and exit status 143; a resume from it runs."""
    settings = [s for s in TINY if not s.startswith("save_model_interval")] + [
        "runner=parallel", "batch_size_run=2", "n_workers=1", "save_model_interval=100000"]
    code, out = ctrl_c_run(tmp_path, "vdn", "matrix_game", *settings, "t_max=10000000", sig=signal.SIGTERM,
                           ready=lambda console: console.count("Recent Stats") >= 2)
    assert code == 143, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    (models,) = glob.glob(str(tmp_path / "models" / "*"))
    steps = checkpoint_steps(models)
    last = steps[-1]
    assert steps == [10, last] and last >= 70
    assert "SIGTERM: stopping after the current rollout and its updates, then saving a checkpoint there" in out
    assert f"Interrupted at t_env {last}. Last checkpoint: t_env {last} in {models}" in out
    assert out.rstrip().endswith("interrupted (SIGTERM): the run is recorded as INTERRUPTED")
    run = sacred_dir(tmp_path, "vdn", "penalty")
    record = read(run, "run.json")
    assert record["status"] == "INTERRUPTED" and record["stop_time"]
    assert read(run, "cout.txt").rstrip().endswith("Run ended: INTERRUPTED (SIGTERM)")

    run_main(tmp_path / "resumed", "vdn", "matrix_game", *settings, f"checkpoint_path={models}", f"t_max={last + 20}")
    assert read(sacred_dir(tmp_path / "resumed", "vdn", "penalty"), "run.json")["status"] == "COMPLETED"
    assert checkpoint_steps(models)[-1] == last + 30


def test_a_resume_from_a_ctrl_c_checkpoint_equals_the_uninterrupted_run(tmp_path):
    """Stopped by Ctrl-C between two runner logs and two interval checkpoints, then resumed: its checkpoints are the
    uninterrupted run's plus the one where it stopped (the interval checkpoints keep their schedule: one before the
    Ctrl-C, and the ones after it at the same steps, with the same content), and after the stop it logs what the
    uninterrupted run logs, at the same steps (the matrix game is deterministic; the checkpoint keeps the episodes
    since the runner's last log)."""
    interval = 200
    settings = [s for s in SETTINGS if not s.startswith(("t_max", "save_model_interval"))] + [
        f"save_model_interval={interval}"]

    def ready(console):  # after the interval checkpoints at t_env 5 and 205, and a summary after them
        parts = console.split("Saved checkpoint", 2)
        return len(parts) == 3 and "Recent Stats" in parts[2]

    code, out = ctrl_c_run(tmp_path / "stopped", "qmix", "matrix_game", *settings, "t_max=100000000", ready=ready)
    assert code == 130, out[-3000:]
    (models,) = glob.glob(str(tmp_path / "stopped" / "models" / "*"))
    stop = checkpoint_steps(models)[-1]
    assert checkpoint_steps(models) == [5, 5 + interval, stop] and stop > 5 + interval
    end = [f"t_max={stop + 2 * interval}"]  # at least one interval checkpoint after the stop
    run_main(tmp_path / "full", "qmix", "matrix_game", *settings, *end)
    run_main(tmp_path / "resumed", "qmix", "matrix_game", *settings, *end, f"checkpoint_path={models}")
    (full_models,) = glob.glob(str(tmp_path / "full" / "models" / "*"))
    full_steps = checkpoint_steps(full_models)
    after = [s for s in full_steps if s > stop]
    assert len(after) >= 2 and all((s - 5) % interval == 0 for s in after[:-1])  # interval ones, then the end's
    assert checkpoint_steps(models) == sorted({*full_steps, stop})
    for step in after:  # the buffer only in the latest
        names = FILES if step == after[-1] else [f for f in FILES if f != "buffer"]
        assert_same(load_all(os.path.join(full_models, str(step)), names),
                    load_all(os.path.join(models, str(step)), names))
    full = read(sacred_dir(tmp_path / "full", "qmix", "penalty"), "info.json")
    resumed = read(sacred_dir(tmp_path / "resumed", "qmix", "penalty"), "info.json")
    for key in ("return_mean", "return_std", "epsilon", "test_return_mean", "loss", "grad_norm"):
        logged = [(t, v) for t, v in zip(full[f"{key}_T"], full[key]) if t > stop]
        assert logged and list(zip(resumed[f"{key}_T"], resumed[key])) == logged, key


def test_a_second_ctrl_c_stops_at_once_and_says_nothing_was_saved(tmp_path):
    settings = [s for s in TINY if not s.startswith("save_model_interval")] + [
        "save_model_interval=100000", "updates_per_rollout=200"]  # long iterations: both presses fall in one
    code, out = ctrl_c_run(tmp_path, "vdn", "matrix_game", *settings, "t_max=10000000", presses=2,
                           ready=lambda console: console.count("Recent Stats") >= 2)
    assert code == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    (models,) = glob.glob(str(tmp_path / "models" / "*"))
    assert checkpoint_steps(models) == [5]
    assert (f"(Ctrl-C again): nothing was saved since the last checkpoint. Last checkpoint: t_env 5 in {models}; "
            f"resume with: with checkpoint_path={models}") in out
    assert read(sacred_dir(tmp_path, "vdn", "penalty"), "run.json")["status"] == "INTERRUPTED"
