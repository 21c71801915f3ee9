"""Ctrl-C in a training loop (run/interrupt.py) at its edges: a request that comes in the loop's last iteration is too
late to matter (the run finishes normally: its final checkpoint, evaluation and labels), and the line after a stop at
once says truly why it was not deferred. The stop at a safe point and its exact resume are tested with a real SIGINT
to the process group in test_resume_checks.py (online) and test_offline_runs.py (offline)."""
import glob
import json
import logging
import os
import signal
import sys
import threading
from types import SimpleNamespace

import pytest

from helpers import run_main, sacred_dir
from main import second_interrupt_exits
from offline import OfflineDataset
from run import loop, offline
from run.interrupt import CtrlC, interrupted
from utils.checkpoint import checkpoint_steps
from utils.signals import Terminated

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "learners"))
from preference_fixtures import add_preference_set, oracle_pairs, write_skill_dataset  # noqa: E402

ONLINE = ["env_args.episode_limit=5", "test_nepisode=2", "test_interval=60", "log_interval=60",
          "runner_log_interval=60", "learner_log_interval=60", "save_model_interval=60", "use_tensorboard=False",
          "batch_size=4", "buffer_size=8", "save_model=True"]
OMAPL = ["offline_steps=6", "offline_test_interval=3", "offline_log_interval=3", "offline_save_interval=3",
         "preference_batch_size=8", "test_nepisode=2", "env_args.episode_limit=5", "hidden_dim=16",
         "critic_hidden_dim=32", "mixing_embed_dim=8", "topk_expert=10", "preference_set=oracle", "save_model=True"]


def press_ctrl_c_when(monkeypatch, module, name, condition):
    """Press Ctrl-C (SIGINT to this process) as `module.name` starts whenever `condition(*its args)` holds."""
    original = getattr(module, name)
    pressed = []

    def pressing(*args, **kwargs):
        if condition(*args):
            pressed.append(True)
            signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, pressing)
    return pressed


def test_a_ctrl_c_in_the_last_iteration_of_an_online_run_is_too_late_to_matter(tmp_path, monkeypatch, capsys,
                                                                                sigint_default):
    """Ctrl-C during the test of the last iteration (t_env 125 of t_max 120): the run ends COMPLETED (exit 0) with
    its final checkpoint and evaluation, saying the Ctrl-C came too late to matter."""
    pressed = press_ctrl_c_when(monkeypatch, loop, "run_test_episodes",
                                lambda ctx, *_: ctx.runner.t_env > ctx.args.t_max)
    run_main(tmp_path, "vdn", "matrix_game", *ONLINE, "t_max=120")
    err = capsys.readouterr().err
    assert pressed == [True]
    assert "Ctrl-C came too late to matter: training had reached its end; the run finishes normally" in err, err[-3000:]
    assert "Interrupted at" not in err and "Final evaluation (t_env 125" in err
    run = sacred_dir(tmp_path, "vdn", "penalty")
    assert json.load(open(os.path.join(run, "run.json")))["status"] == "COMPLETED"
    (models,) = glob.glob(str(tmp_path / "models" / "*"))
    assert checkpoint_steps(models) == [5, 65, 125]


def test_a_ctrl_c_in_the_final_evaluation_of_omapl_still_writes_its_labels(tmp_path, monkeypatch, capsys,
                                                                           sigint_default):
    """O-MAPL's labels are written at the end: a Ctrl-C during the evaluation at its last gradient step leaves the
    run COMPLETED, its final evaluation reported and its labels written."""
    data = write_skill_dataset(tmp_path / "mix.h5", 10, 30)
    pairs, label = oracle_pairs(OfflineDataset.load(data).returns, 60)
    add_preference_set(data, "oracle", pairs, label)
    pressed = press_ctrl_c_when(monkeypatch, offline, "evaluate", lambda ctx, step, valid: step == 6)
    run_main(tmp_path, "omapl", "climbing", f"offline_dataset={data}", *OMAPL)
    err = capsys.readouterr().err
    assert pressed == [True]
    assert "Ctrl-C came too late to matter" in err and "Interrupted at" not in err, err[-3000:]
    assert "Wrote labels ['oracle_expert', 'oracle_return_hat']" in err
    run = sacred_dir(tmp_path, "omapl", "climbing")
    assert json.load(open(os.path.join(run, "run.json")))["status"] == "COMPLETED"
    assert OfflineDataset.load(data).label_names == ["oracle_expert", "oracle_return_hat"]


def ctx_for_messages(tmp_path):
    return SimpleNamespace(last_checkpoint=str(tmp_path / "models" / "run" / "40"),
                           args=SimpleNamespace(save_model=True))


def test_a_second_ctrl_c_stops_at_once_and_says_so(tmp_path, caplog, sigint_default):
    log = logging.getLogger("test_ctrl_c")
    with caplog.at_level(logging.WARNING, "test_ctrl_c"):
        with pytest.raises(KeyboardInterrupt), CtrlC(log, "the current step", True) as ctrl_c:
            signal.raise_signal(signal.SIGINT)
            assert ctrl_c.requested
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        interrupted(ctx_for_messages(tmp_path), "t_env", 42, log, at_once=ctrl_c.why_at_once())
    assert ("Stopped at once at t_env 42 (Ctrl-C again): nothing was saved since the last checkpoint. Last "
            "checkpoint: t_env 40") in caplog.text


def test_sigterm_is_taken_as_a_ctrl_c_and_a_second_signal_of_either_kind_stops_at_once(tmp_path, caplog,
                                                                                       sigint_default):
    """Under src/main.py's handlers: a SIGTERM asks the loop to stop (named SIGTERM; the run then ends with
    Terminated, exit status 143); a second SIGTERM, or a Ctrl-C after it, stops it at once and the line says which."""
    log = logging.getLogger("test_ctrl_c")
    with caplog.at_level(logging.WARNING, "test_ctrl_c"):
        for second, exception, why in [(signal.SIGTERM, Terminated, "SIGTERM again"),
                                       (signal.SIGINT, KeyboardInterrupt, "Ctrl-C after SIGTERM")]:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # (the first round leaves its exit-at-once
            signal.signal(signal.SIGTERM, signal.SIG_DFL)                # handlers, as after a run's interrupt)
            with second_interrupt_exits(), pytest.raises(exception) as raised, \
                    CtrlC(log, "the current step", True) as ctrl_c:
                signal.raise_signal(signal.SIGTERM)
                assert ctrl_c.requested and ctrl_c.by == "SIGTERM" and isinstance(ctrl_c.interrupt(), Terminated)
                signal.raise_signal(second)
            assert (raised.type is Terminated) == (second == signal.SIGTERM) and ctrl_c.why_at_once() == why
    assert ("SIGTERM: stopping after the current step, then saving a checkpoint there; SIGTERM again stops at once "
            "without saving") in caplog.text


def test_a_ctrl_c_that_was_not_deferred_does_not_say_again(tmp_path, caplog):
    """Where SIGINT has another handler (here one raising KeyboardInterrupt at once) the loop leaves it alone: a
    single Ctrl-C stops it where it was, and the line says why it was not deferred, not 'Ctrl-C again'."""
    def other(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, other)
    log = logging.getLogger("test_ctrl_c")
    try:
        with caplog.at_level(logging.WARNING, "test_ctrl_c"):
            with pytest.raises(KeyboardInterrupt), CtrlC(log, "the current step", True) as ctrl_c:
                signal.raise_signal(signal.SIGINT)
            assert signal.getsignal(signal.SIGINT) is other
            interrupted(ctx_for_messages(tmp_path), "t_env", 42, log, at_once=ctrl_c.why_at_once())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "Ctrl-C again" not in caplog.text
    assert ("Stopped at once at t_env 42 (Ctrl-C, not deferred: SIGINT has another handler than Python's default "
            "here, which this run leaves as it is): nothing was saved") in caplog.text


def test_outside_the_main_thread_the_line_says_so(tmp_path, sigint_default):
    log = logging.getLogger("test_ctrl_c")
    out = []

    def body():
        with CtrlC(log, "the current step", True) as ctrl_c:
            out.append(ctrl_c.why_at_once())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert out == ["Ctrl-C, not deferred: the training loop runs outside the main thread, where Ctrl-C cannot be "
                   "deferred"]
