"""The Ray Tune trainable of a sweep: one trial is one normal run, `python src/main.py ...` in a child process.

The child writes its Sacred folder and checkpoints as any run does. It dies with the Ray worker that started it
(PR_SET_PDEATHSIG), so a killed driver or a lost node leaves no run going on. Before it starts, the trial's runs on
disk decide what to do: a trial whose Sacred run COMPLETED is not run again (a Tune retry or `--resume` after it
finished); one whose earlier attempt left checkpoints resumes from the latest (checkpoint_path=<its model folder>:
the project's resume, which continues the same run and model folder). Progress (t_env, the metric) is read from the
child's console lines and reported to Tune; a failed child raises TrialFailed with the tail of its output. A run
that failed with an error a rerun would repeat (a NaN loss, an unusable dataset, generation that cannot go on: see
main.failure_recorded) is not retried by the same sweep call (a marker beside its Sacred run names the call), nor is
one that stopped on a config error (main.py exit status 2 and no run folder left: the marker is in the sweep folder);
`--resume` after the cause is fixed runs it again.
"""
import collections
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from sweeps.manifest import run_progress, sacred_runs, trial_state
from sweeps.spec import trial_argv
from utils.files import load_json, write_json_atomic
from utils.paths import REPO_ROOT

TAIL_LINES = 40
STOP_FILE = "stopping"  # in the sweep folder while its driver stops the trials (driver.trials_stop_first)
# src/main.py's exit status after a Ctrl-C / SIGTERM it was sent; -SIGTERM: sent before it set up its handler
INTERRUPTED_EXITS = (130, 143, -signal.SIGTERM)
NOT_RETRIED = "not_retried.json"  # in the failed Sacred run's folder: {call, message}; this sweep call retries no more
CONFIG_ERROR_EXIT = 2  # src/main.py's exit status on a config error (its run folder removed) or an unusable dataset
T_ENV = re.compile(r"\bt_env:\s+(\d+)")
NUMBER = r"(-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"


class TrialFailed(RuntimeError):
    """A trial's run exited with an error; the message ends with the tail of its output."""


def _die_with_parent():
    """In the child, before exec: SIGKILL when the parent (the Ray worker) dies (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def trial_command(trial, checkpoint_path=None):
    return [sys.executable, "-u", os.path.join(REPO_ROOT, "src", "main.py"),
            *trial_argv(trial, trial["label"], checkpoint_path)]


class Progress:
    """The latest t_env and metric value seen in a run's console output, and its last lines."""

    def __init__(self, metric):
        self.metric = re.compile(rf"\b{re.escape(metric)}:\s+{NUMBER}")
        self.t_env = self.value = None
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.changed = threading.Event()

    def feed(self, stream):
        for line in stream:
            self.tail.append(line.rstrip("\n"))
            m = T_ENV.search(line)
            if m:
                self.t_env = int(m.group(1))
                self.changed.set()
            m = self.metric.search(line)
            if m:
                self.value = float(m.group(1))
                self.changed.set()


def _stop_asked_elsewhere(stop_file):
    """Whether the driver, on another host (the stop file names it), asked the sweep to stop."""
    try:
        with open(stop_file) as f:
            return f.read().strip() != socket.gethostname()
    except OSError:
        return False


def run_trial(config):
    """Ray Tune function trainable: config["trial"] is a validated trial of sweeps.spec with `label` and `metric`."""
    import ray
    from ray import tune

    trial, start = config["trial"], time.time()
    metric = trial["metric"]
    base = {"trial_index": trial["index"], "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(), "launch": uuid.uuid4().hex}  # this start of the trial (attempts)
    state = trial_state(trial, metric)
    if state["status"] == "COMPLETED":
        tune.report({**base, "status": "COMPLETED", "t_env": state["t_env"], metric: state["value"],
                     "sacred_run": state["sacred_run"], "already_complete": True})
        return
    def report_stopped(**result):  # the driver is stopping the sweep: this trial ends INTERRUPTED, never retried
        tune.report({**base, "t_env": state["t_env"], metric: state["value"], **result, "status": "INTERRUPTED"})

    if os.path.exists(config["stop_file"]):  # start nothing more
        report_stopped(sacred_run=state["sacred_run"])
        return
    call = config.get("call")  # this sweep call's id (sweeps.driver): its retries refuse, a later --resume runs again
    markers = [config_error_marker(config, trial)]
    if state["status"] == "FAILED":
        markers.append(os.path.join(state["sacred_run"], NOT_RETRIED))
    for path in markers:
        marker = load_json(path) or {}
        if call and marker.get("call") == call:  # Tune's retry of a run that failed in a way a rerun would repeat
            raise TrialFailed(marker.get("message", ""))
    resume_from = state["model_dir"]
    cmd = trial_command(trial, resume_from)
    progress = Progress(metric)
    attempt = len(state["sacred_runs"]) + 1
    tune.report({**base, "status": "RUNNING", "t_env": state["t_env"], metric: state["value"], "attempt": attempt,
                 "resumed_from": resume_from, "sacred_run": None})
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    run_start = time.time()
    if os.path.exists(config["stop_file"]):  # the stop came while the report above waited on the driver
        report_stopped()
        return
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, preexec_fn=_die_with_parent)
    reader = threading.Thread(target=progress.feed, args=(proc.stdout,), daemon=True)
    reader.start()
    run_dir, last_report = None, 0.0
    try:
        signalled = False
        while proc.poll() is None:
            if not signalled and _stop_asked_elsewhere(config["stop_file"]):  # the driver signals this host's runs
                proc.send_signal(signal.SIGTERM)                                # itself: never twice (twice = at once)
                signalled = True
            if progress.changed.is_set():  # at most one report a second
                time.sleep(max(0.0, min(1.0, last_report + 1.0 - time.time())))
            progress.changed.wait(1.0)
            if run_dir is None:
                runs = sacred_runs(trial)
                run_dir = runs[-1] if len(runs) >= attempt else None
            if progress.changed.is_set() and time.time() - last_report >= 1.0:
                progress.changed.clear()
                last_report = time.time()
                tune.report({**base, "status": "RUNNING", "t_env": progress.t_env, metric: progress.value,
                             "attempt": attempt, "resumed_from": resume_from, "sacred_run": run_dir})
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_s = time.time() - run_start
    final = trial_state(trial, metric)
    run_dir = run_dir or final["sacred_run"]
    t_env, value = run_progress(run_dir, metric) if run_dir else (None, None)
    result = {**base, "t_env": t_env if t_env is not None else progress.t_env,
              metric: value if value is not None else progress.value, "attempt": attempt, "sacred_run": run_dir,
              "resumed_from": resume_from, "wall_s": time.time() - start, "run_s": run_s}
    if proc.returncode == 0 and final["status"] == "COMPLETED":
        tune.report({**result, "status": "COMPLETED", "sacred_run": final["sacred_run"]})
        return
    if proc.returncode in INTERRUPTED_EXITS and os.path.exists(config["stop_file"]):  # saved and ended
        report_stopped(**result)
        return
    tail = "\n".join(progress.tail)
    # only this attempt's own run: one that failed before Sacred started (or on a config error, whose folder is
    # removed) must not be blamed on an earlier run's failure
    own_run = final["sacred_runs"][-1] if len(final["sacred_runs"]) >= attempt else None
    failure = repeated_failure(own_run)
    if own_run is None and proc.returncode == CONFIG_ERROR_EXIT:  # the same arguments give the same config error
        said = [line.strip() for line in progress.tail if line.strip()] or [""]
        failure = f"config error (not retried: fix the trial's settings, then resume the sweep): {said[-1]}"
    if failure:
        tail += f"\n{failure}"
    message = f"trial {trial['id']} failed (exit code {proc.returncode}, Sacred run {run_dir}):\n{tail}"
    if failure and call:
        try:  # on the results disk (beside the run, or in the sweep folder), so a retry on any node sees it
            marker = os.path.join(own_run, NOT_RETRIED) if own_run else config_error_marker(config, trial)
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            write_json_atomic(marker, {"call": call, "message": message})
        except OSError:
            pass  # then Tune retries it once more: the same failure again, nothing lost
    tune.report({**result, "status": "ERROR", "error": tail})
    raise TrialFailed(message)


def config_error_marker(config, trial):
    """Where a config error of the trial (whose run folder main.py removes) is marked for this sweep call: the sweep
    folder's not_retried/<trial id>.json."""
    return os.path.join(os.path.dirname(config["stop_file"]), "not_retried", f"{trial['id']}.json")


def repeated_failure(run_dir):
    """The line that says a run's failure is one a rerun would repeat (main.failure_recorded: its error class sets
    repeats_on_retry), or None."""
    info = load_json(os.path.join(run_dir, "info.json")) if run_dir else None
    failure = (info or {}).get("failure") or {}
    if not failure.get("repeats_on_retry"):
        return None
    return (f"{failure['error']} (not retried: a rerun of this trial would fail the same way; fix the cause, then "
            f"resume the sweep): {failure['message'].strip().splitlines()[-1] if failure['message'].strip() else ''}")
