"""Running a sweep on Ray Tune: prepare (validate every trial, set up or resume the manifest), start or join Ray, run
the trials as Tune trials of sweeps.trial.run_trial, and keep the manifest and the progress display up to date.

    sweep = prepare(spec, resume=False)          # ConfigError before anything starts
    code = run(sweep, address=None, max_concurrent=None)

Without `address` a local Ray starts (all the machine's CPUs and GPUs, no dashboard, quiet); `address` ("auto", a
head's HOST:PORT or ray://HOST:PORT) joins a running cluster. Workers import this package from the same src/
folder (PYTHONPATH in the job's runtime_env): every node needs the checkout at the same path.
"""
import contextlib
import datetime
import difflib
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid

from sweeps.manifest import read_manifest, sweep_folder, trial_state, write_manifest
from sweeps.spec import expand, validate
from sweeps.trial import STOP_FILE, trial_command
from utils.config import ConfigError
from utils.files import FolderLock, load_json
from utils.paths import REPO_ROOT, SRC_DIR
from utils.runs import logged_metrics
from utils.signals import STOPPING, handlers_restored, stop

RAY_PIN = "ray[tune]==2.60.0"
INSTALL_HINT = (f"Ray is not installed in this environment; sweeps need it: .venv/bin/pip install '{RAY_PIN}' "
                f"(pinned in requirements.txt; ./install.sh installs it)")
FINAL = ("COMPLETED", "ERROR", "INTERRUPTED")
RECORD_KEYS = ("status", "sacred_run", "sacred_runs", "model_dir", "node_id", "hostname", "t_env", "value",
               "attempts", "error", "started", "ended", "resumed_from")


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def spec_settings(spec):
    return {k: spec[k] for k in ("cpus_per_trial", "gpus_per_trial", "metric", "mode", "retries", "max_concurrent")}


class Sweep:
    """A prepared sweep: its spec, folder, trials (validated, labelled) and manifest records."""

    def __init__(self, spec, folder, uid, trials, records, created):
        self.spec, self.folder, self.uid, self.trials, self.records = spec, folder, uid, trials, records
        self.created = created
        self.metric = spec["metric"]

    @property
    def name(self):
        return self.spec["name"]

    def manifest(self, status):
        return {"name": self.name, "uid": self.uid, "file": self.spec.get("file"), "created": self.created,
                "updated": now(), "status": status, "metric": self.metric, "settings": spec_settings(self.spec),
                "spec": self.spec, "trials": self.records}

    def write(self, status="RUNNING"):
        write_manifest(self.folder, self.manifest(status))

    def pending(self):
        return [t for t, r in zip(self.trials, self.records) if r["status"] != "COMPLETED"]


def record(trial, metric):
    return {"id": trial["id"], "index": trial["index"], "entry": trial["entry"], "alg": trial["alg"],
            "env": trial["env"], "name": trial["name"], "env_label": trial["env_label"], "grid": trial["grid"],
            "overrides": trial["overrides"], "seed": trial["seed"], "label": trial["label"],
            "resources": trial["resources"], "t_max": trial["t_max"], "results": trial["results"],
            "command": trial_command(trial)[1:], "metric": metric, "status": "PENDING", "sacred_run": None,
            "sacred_runs": [], "model_dir": None, "node_id": None, "hostname": None, "t_env": None, "value": None,
            "attempts": 0, "error": None, "started": None, "ended": None, "resumed_from": None}


def prepare(spec, resume=False):
    """Validate every trial (ConfigError naming the first bad one) and set up the sweep's manifest: a new one, or,
    resuming, the recorded one with each trial's status refreshed from its Sacred runs (COMPLETED ones are not run
    again). Resuming takes the sweep as recorded in its manifest (the file may have changed since)."""
    folder = sweep_folder(spec)
    manifest = read_manifest(folder)
    if resume:
        if manifest is None:
            raise ConfigError(f"nothing to resume: {os.path.join(folder, 'manifest.json')} does not exist; "
                              f"start the sweep without --resume")
        spec = manifest["spec"]
    elif manifest is not None:
        raise ConfigError(f"sweep '{spec['name']}' already has a manifest ({os.path.join(folder, 'manifest.json')}, "
                          f"status {manifest.get('status')}): --resume finishes it; --name NEW starts another sweep "
                          f"of the same file")
    trials = validate(expand(spec))
    lock = FolderLock.try_acquire(folder)  # one driver per sweep: two would run every pending trial twice
    if lock is None:
        raise ConfigError(f"another driver is running sweep '{spec['name']}' ({folder} is locked): wait for it to "
                          f"finish, or stop it and then --resume")
    uid = manifest["uid"] if resume else uuid.uuid4().hex[:8]
    for t in trials:
        t["label"] = f"sweep:{spec['name']}:{uid}:{t['index']}"
        t["metric"] = spec["metric"]
    records = [record(t, spec["metric"]) for t in trials]
    if resume:
        old = {r["id"]: r for r in manifest["trials"]}
        if set(old) != {r["id"] for r in records}:
            raise ConfigError(f"the trials of sweep '{spec['name']}' differ from those its manifest records; "
                              f"start a new sweep (--name NEW)")
        for t, r in zip(trials, records):
            r.update({k: old[r["id"]].get(k, r[k]) for k in RECORD_KEYS})
            state = trial_state(t, spec["metric"])
            r.update(sacred_runs=state["sacred_runs"], sacred_run=state["sacred_run"] or r["sacred_run"],
                     model_dir=state["model_dir"] or r["model_dir"])
            if state["status"] == "COMPLETED":
                r.update(status="COMPLETED", t_env=state["t_env"], value=state["value"], error=None)
            else:
                r["status"] = "PENDING"
    sweep = Sweep(spec, folder, uid, trials, records, manifest["created"] if resume else now())
    sweep.lock = lock  # held while this driver lives; the kernel releases it when the driver dies (even kill -9)
    return sweep


# ----- Ray -----
def import_ray():
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError as e:
        raise ray_missing(e) from None
    return ray


def ray_missing(error):
    """The exit of a sweep command whose `import ray` raised `error` (an ImportError): how to install Ray."""
    return SystemExit(f"{INSTALL_HINT} ({error})")


def quiet_ray():
    """Ray and Tune say only what goes wrong; Tune writes no per-trial result files or TensorBoard logs of its own
    (the runs have their Sacred folders)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "100000")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)


def runtime_env():
    """The job's workers import sweeps from this checkout's src/ (the same path on every node)."""
    path = os.pathsep.join(p for p in (SRC_DIR, os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def start_ray(address=None, num_cpus=None):
    """ray.init: a local Ray (num_cpus: the machine's by default; GPUs detected) or the cluster at `address`.
    Nothing if Ray is already initialised in this process (a caller's own ray.init or cluster)."""
    ray = import_ray()
    quiet_ray()
    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, runtime_env=runtime_env(), logging_level=logging.ERROR, log_to_driver=False)
    else:
        # Ray nices its workers to 15 by default, so a trial (the worker's child) got a fraction of a core whenever
        # anything else ran on the machine; ours run at the driver's priority. (A cluster: `ray start` with
        # RAY_worker_niceness=0 in its environment, README "Sweeps and results".)
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=runtime_env(),
                 logging_level=logging.ERROR, log_to_driver=False, _system_config={"worker_niceness": 0})
    return ray


# ----- progress -----
def fmt(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def fmt_eta(seconds):
    if seconds is None:
        return "-"
    return str(datetime.timedelta(seconds=int(seconds)))


class Display:
    """One line per trial status change; on a terminal, a live table of the trials instead."""

    def __init__(self, sweep, stream=None):
        self.sweep, self.stream = sweep, stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.drawn = 0
        self.first = {}  # index -> (time, t_env) of the first progress seen in this driver
        self.warned, self.notes = False, []  # metric_note, said once

    def eta(self, r):
        if r["status"] != "RUNNING" or r["t_env"] is None:
            return None
        t0 = self.first.setdefault(r["index"], (time.time(), r["t_env"]))
        rate = (r["t_env"] - t0[1]) / max(time.time() - t0[0], 1e-9)
        return (r["t_max"] - r["t_env"]) / rate if rate > 0 else None

    def counts(self):
        records = self.sweep.records
        by = {s: sum(r["status"] == s for r in records) for s in ("RUNNING", "COMPLETED", "ERROR")}
        return f"{by['COMPLETED']}/{len(records)} done, {by['RUNNING']} running, {by['ERROR']} failed"

    def line(self, r):
        node = f" node {r['node_id'][:8]} ({r['hostname']})" if r.get("node_id") else ""
        error = f" error: {(r['error'] or '').strip().splitlines()[-1][:160]}" if r["status"] == "ERROR" and \
            r.get("error") else ""
        return (f"[{time.strftime('%H:%M:%S')}] {self.sweep.name} {r['status']:<9} {r['id']}  t_env {fmt(r['t_env'])}"
                f"  {self.sweep.metric} {fmt(r['value'])}{node}{error}  ({self.counts()})")

    def status_changed(self, r):
        note = None if self.warned else metric_note(self.sweep.metric, r)
        if note:
            self.warned = True
            self.notes.append(note)
        if self.tty:
            self.table()
        else:
            print(self.line(r), file=self.stream, flush=True)
            if note:
                print(note, file=self.stream, flush=True)

    def progress(self, r):
        self.eta(r)
        if self.tty:
            self.table()

    def table(self):
        width = shutil.get_terminal_size((120, 40))
        rows = sorted(self.sweep.records, key=lambda r: ("RUNNING", "ERROR", "PENDING", "COMPLETED").index(
            r["status"]) if r["status"] in ("RUNNING", "ERROR", "PENDING", "COMPLETED") else 4)
        rows = rows[:max(3, width.lines - 4)]
        lines = [f"sweep {self.sweep.name}: {self.counts()}",
                 f"{'trial':<40} {'status':<9} {'t_env':>9} {self.sweep.metric[:16]:>16} {'ETA':>9}  node"]
        for r in rows:
            lines.append(f"{r['id'][:40]:<40} {r['status']:<9} {fmt(r['t_env']):>9} {fmt(r['value']):>16} "
                         f"{fmt_eta(self.eta(r)):>9}  {(r.get('hostname') or '-')}")
        lines += self.notes
        out = "".join("\x1b[1A\x1b[2K" for _ in range(self.drawn)) + "\n".join(l[:width.columns] for l in lines)
        print(out, file=self.stream, flush=True)
        self.drawn = len(lines)


def metric_note(metric, r):
    """A warning when a completed trial's run logged metrics of the kind of the sweep's `metric` (test_*: evaluations)
    but not it (a misspelt name leaves every value column empty while the runs are fine); None otherwise, e.g. for
    runs that log no such metrics."""
    if r["status"] != "COMPLETED" or r.get("value") is not None or not r.get("sacred_run"):
        return None
    logged = logged_metrics(load_json(os.path.join(r["sacred_run"], "info.json")))
    if metric.startswith("test_"):  # a run that never evaluates (a reward model, a label run) is no sign of a typo
        logged = [k for k in logged if k.startswith("test_")]
    if not logged or metric in logged:
        return None
    close = difflib.get_close_matches(metric, logged, n=3)
    return (f"note: {r['id']} completed without logging '{metric}', the sweep's metric (its run logs "
            f"{', '.join(close or sorted(logged)[:5])}{', ...' if not close and len(logged) > 5 else ''}): the "
            f"manifest's values stay empty; fix `metric` in the sweep file or --metric. The runs are unaffected.")


def make_callback(sweep, display):
    from ray import tune

    class SweepCallback(tune.Callback):
        """Keeps the manifest and the display up to date from the trials' reports (in the driver)."""

        def __init__(self):
            self.last_write = 0.0

        def __reduce__(self):  # Tune saves its callbacks with the experiment; resuming goes through the manifest
            return tune.Callback, ()

        def _record(self, trial):
            return sweep.records[trial.config["trial"]["index"]]

        def _set_status(self, r, status):
            if r["status"] != status:
                r["status"] = status
                if status in FINAL:
                    r["ended"] = now()
                sweep.write()
                self.last_write = time.time()
                display.status_changed(r)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            r = self._record(trial)
            attempt = result.get("attempt")  # counted per start of the trainable: a retry whose run left no
            launch = result.get("launch")      # folder (a config error) has the same attempt number
            if attempt and [attempt, launch] != r.get("_attempt"):
                r["_attempt"] = [attempt, launch]
                r["attempts"] = r.get("attempts", 0) + 1
                r["started"] = r["started"] or now()
            for key in ("node_id", "hostname", "t_env", "sacred_run", "resumed_from", "error", "wall_s", "run_s"):
                if result.get(key) is not None:
                    r[key] = result[key]
            if result.get(sweep.metric) is not None:
                r["value"] = result[sweep.metric]
            if r.get("sacred_run") and r["sacred_run"] not in r["sacred_runs"]:
                r["sacred_runs"].append(r["sacred_run"])
            status = result.get("status", "RUNNING")
            if status == "COMPLETED":
                r["error"] = None
            if status != r["status"]:
                self._set_status(r, status)
            else:
                display.progress(r)
                if time.time() - self.last_write > 5:
                    sweep.write()
                    self.last_write = time.time()

        def on_trial_error(self, iteration, trials, trial, **info):
            r = self._record(trial)
            if not r.get("error"):
                r["error"] = error_text(trial)
            self._set_status(r, "ERROR")

        def on_trial_recover(self, iteration, trials, trial, **info):
            r = self._record(trial)
            self._set_status(r, "RETRYING")

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = self._record(trial)
            if r["status"] not in FINAL:
                self._set_status(r, "COMPLETED")

    return SweepCallback()


def error_text(trial):
    """The tail of a Tune trial's error (its error file), for a trial that failed without reporting one."""
    path = getattr(trial, "error_file", None)
    text = ""
    if path and os.path.isfile(path):
        with open(path, errors="replace") as f:
            text = f.read()
    text = text or str(getattr(trial, "error_msg", "") or "the trial's worker died")
    return "\n".join(text.strip().splitlines()[-40:])


def trial_resources(config):
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    res = config["trial"]["resources"]
    bundle = {"CPU": res["cpu"], **({"GPU": res["gpu"]} if res["gpu"] > 0 else {})}
    return PlacementGroupFactory([bundle])


def run(sweep, address=None, max_concurrent=None, num_cpus=None, stream=None):
    """Run the sweep's pending trials; returns 0 when every trial has COMPLETED (decided from its Sacred run)."""
    ray = start_ray(address, num_cpus)
    from ray import tune

    from sweeps.trial import run_trial

    display = Display(sweep, stream)
    pending = sweep.pending()
    sweep.write()
    out = display.stream
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    print(f"sweep {sweep.name}: {len(sweep.trials)} trials, {len(pending)} to run "
          f"({len(sweep.trials) - len(pending)} already complete), on {len(nodes)} Ray node(s) with "
          f"{ray.cluster_resources().get('CPU', 0):g} CPUs and {ray.cluster_resources().get('GPU', 0):g} GPUs; "
          f"manifest {os.path.join(sweep.folder, 'manifest.json')}", file=out, flush=True)
    if pending:
        limit = max_concurrent or sweep.spec.get("max_concurrent") or None
        call = f"run_{datetime.datetime.now().strftime('%Y%m%d_%H%M%S_%f')}"  # this call: Tune's run folder, and
        tuner = tune.Tuner(                                                 # which retries a trial refuses
            tune.with_resources(run_trial, trial_resources),
            param_space={"trial": tune.grid_search(pending), "call": call,
                         "stop_file": os.path.join(sweep.folder, STOP_FILE)},
            tune_config=tune.TuneConfig(max_concurrent_trials=limit, reuse_actors=True,
                                        trial_dirname_creator=lambda t: f"trial_{t.config['trial']['index']}",
                                        trial_name_creator=lambda t: t.config["trial"]["id"]),
            run_config=tune.RunConfig(name=call,
                                      storage_path=os.path.join(sweep.folder, "ray"), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=int(sweep.spec["retries"])),
                                      callbacks=[make_callback(sweep, display)]),
        )
        with handlers_restored(signal.SIGINT, signal.SIGUSR1), trials_stop_first(sweep, out) as stopping:
            tuner.fit()
        code = finish(sweep, out)
        return 128 + stopping[0] if stopping else code  # stopped by a signal: what a shell reads as such
    return finish(sweep, out)


STOP_GRACE_S = 300  # how long a Ctrl-C waits for the running trials to save a checkpoint and end


def local_trial_pids(label):
    """PIDs of this machine's trial runs of the sweep whose trials' labels start with `label` (their command lines
    carry it: label=sweep:<name>:<uid>:<index>)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if b"src/main.py" in cmdline and label.encode() in cmdline:
            found.append(int(pid))
    return found


def _ended(pid):
    """Whether process `pid` has ended: gone, or a zombie its parent (a Ray worker, whose trial function may wait
    on a report to this blocked driver) has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def trials_stop_first(sweep, out, grace_s=STOP_GRACE_S):
    """Around tuner.fit(): the first Ctrl-C (or SIGTERM) goes on to the trial runs on this machine, which save a
    checkpoint at their next safe point and end INTERRUPTED (run/interrupt.py), as a run started by hand does; once
    they have ended (at most grace_s) Tune is told to stop (SIGUSR1, its own stop signal). Left to Tune, its stop
    ends the Ray workers at once and their runs die with them, losing all since their last periodic checkpoint.
    No trial starts once the stop is asked (the stop file, sweeps.trial). A second signal stops at once. Trials on
    other machines still end with their workers (resumed from their last periodic checkpoint)."""
    stop_file = os.path.join(sweep.folder, STOP_FILE)
    label = f"sweep:{sweep.spec['name']}:{sweep.uid}:"
    stopping = []

    def handle(signum, frame):
        if stopping:
            raise stop(signum)
        stopping.append(signum)
        with open(stop_file, "w") as f:  # trials on other hosts signal their own runs (sweeps.trial)
            f.write(socket.gethostname())
        pids = local_trial_pids(label)
        print(f"\n{STOPPING[signum]}: {len(pids)} running trial(s) here save a checkpoint and end first (up "
              f"to {grace_s:g} s; a second Ctrl-C or SIGTERM stops at once)", file=out, flush=True)
        for pid in pids:  # SIGTERM: a run takes it as a Ctrl-C (utils/signals.py); Ray's workers ignore SIGINT,
            with contextlib.suppress(OSError):  # and so do the runs they start
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not all(_ended(p) for p in pids):
            time.sleep(0.2)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # Tune has not set up its stop yet
            raise stop(signum)
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own graceful stop

    with contextlib.suppress(FileNotFoundError):
        os.unlink(stop_file)
    tune_own = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours takes Ctrl-C; Tune keeps SIGUSR1
    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if tune_own is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_own
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stop_file)


def finish(sweep, out):
    """Each trial's final status from its Sacred runs (COMPLETED there is final; an unfinished run that Ray did not
    report as failed was interrupted), the manifest written, a summary printed."""
    for t, r in zip(sweep.trials, sweep.records):
        r.pop("_attempt", None)
        state = trial_state(t, sweep.metric)
        r.update(sacred_runs=state["sacred_runs"], model_dir=state["model_dir"] or r["model_dir"])
        if state["status"] == "COMPLETED":
            r.update(status="COMPLETED", sacred_run=state["sacred_run"], t_env=state["t_env"], value=state["value"],
                     error=None)
        elif r["status"] != "ERROR":
            r["status"] = "INTERRUPTED"
    failed = [r for r in sweep.records if r["status"] != "COMPLETED"]
    sweep.write("COMPLETED" if not failed else "INCOMPLETE")
    done = len(sweep.records) - len(failed)
    print(f"sweep {sweep.name}: {done}/{len(sweep.records)} trials completed"
          + (f", {len(failed)} not: " + "; ".join(
              f"{r['id']} {r['status']}" + (f" ({(r['error'] or '').strip().splitlines()[-1][:200]})"
                                            if r.get("error") else "") for r in failed[:10]) if failed else "")
          + f"\nmanifest: {os.path.join(sweep.folder, 'manifest.json')}"
          + ("" if not failed else f"\nfinish it with: python src/sweep.py {resume_target(sweep)} --resume"),
          file=out, flush=True)
    return 0 if not failed else 1


def resume_target(sweep):
    """What to pass to `src/sweep.py ... --resume`: the sweep file when the sweep has its name, else its folder."""
    file = sweep.spec.get("file")
    if file and os.path.isfile(file) and os.path.splitext(os.path.basename(file))[0] == sweep.spec["name"]:
        return os.path.relpath(file, REPO_ROOT) if file.startswith(REPO_ROOT) else file
    return os.path.relpath(sweep.folder, REPO_ROOT) if sweep.folder.startswith(REPO_ROOT) else sweep.folder
