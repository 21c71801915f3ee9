"""A sweep's folder, <local_results_path>/sweeps/<name>/, and what the runs on disk say about its trials.

manifest.json (rewritten atomically on every change, utils.files.write_json_atomic) holds the sweep's settings and one
record per trial: id, alg, env, overrides, seed, label, argv (the src/main.py arguments), status (PENDING, RUNNING,
COMPLETED, ERROR), sacred_run (its Sacred run folder; sacred_runs: every attempt's), model_dir (its checkpoints),
node_id and hostname (where it ran last), t_env (where a finished run ended, else its latest logged step) and the
metric's latest value, attempts, and error (the tail of a failed attempt's output).

A trial's runs are found by its `label` config value (sweep:<name>:<uid>:<index>), which every one of its Sacred
runs (config.json) and model folders (config.json) records: whether a trial is complete is decided from its Sacred
runs' run.json, never from Ray's state alone. Nothing here imports torch or Ray.
"""
import glob
import os

from utils.files import load_json, write_json_atomic
from utils.paths import results_path
from utils.runs import run_status

MANIFEST = "manifest.json"


def sweep_folder(spec):
    """<local_results_path of the sweep's `with`>/sweeps/<name> (absolute)."""
    return os.path.join(results_path({"local_results_path": (spec.get("with") or {}).get("local_results_path",
                                                                                        "results")}),
                        "sweeps", spec["name"])


def read_manifest(folder):
    return load_json(os.path.join(folder, MANIFEST))


def write_manifest(folder, manifest):
    write_json_atomic(os.path.join(folder, MANIFEST), manifest, fsync=False)


def sacred_runs(trial):
    """The trial's Sacred run folders, oldest first (results/sacred/<name>/<env label>/<id>/ with its label)."""
    base = os.path.join(trial["results"], "sacred", trial["name"], trial["env_label"])
    found = []
    for run_dir in glob.glob(os.path.join(base, "*")):
        name = os.path.basename(run_dir)
        if name.isdigit() and (load_json(os.path.join(run_dir, "config.json")) or {}).get("label") == trial["label"]:
            found.append((int(name), run_dir))
    return [d for _, d in sorted(found)]


def checkpoint_steps(model_dir):
    """The complete checkpoints of a model folder (numbered folders holding agent.th), ascending (as
    utils.checkpoint.checkpoint_steps, without importing torch)."""
    try:
        names = os.listdir(model_dir)
    except OSError:
        return []
    return sorted(int(d) for d in names if d.isdigit() and os.path.isfile(os.path.join(model_dir, d, "agent.th")))


def model_dir(trial):
    """The trial's model folder holding checkpoints (results/models/<name>_seed<seed>_<env label>_<time>/ whose
    config.json has its label), the latest if several; None if none has a checkpoint yet."""
    pattern = os.path.join(trial["results"], "models", f"{trial['name']}_seed{trial['seed']}_{trial['env_label']}_*")
    found = [d for d in glob.glob(pattern) if checkpoint_steps(d)
             and (load_json(os.path.join(d, "config.json")) or {}).get("label") == trial["label"]]
    return max(found, key=lambda d: checkpoint_steps(d)[-1]) if found else None


def latest(info, key):
    """(t, value) of the latest logged `key` in a Sacred info.json, or (None, None)."""
    values, steps = (info or {}).get(key), (info or {}).get(f"{key}_T")
    if not values or not steps:
        return None, None
    return steps[-1], values[-1]


def run_progress(run_dir, metric):
    """(t_env, the metric's latest value) from a Sacred run's info.json: t_env where a finished online run ended
    (`t_env_end`), else the latest step it logged."""
    info = load_json(os.path.join(run_dir, "info.json")) or {}
    t, value = latest(info, metric)
    if isinstance(info.get("t_env_end"), int):
        return info["t_env_end"], value
    steps = [latest(info, k)[0] for k in ("episode", "return_mean", "loss", metric)]
    steps = [s for s in steps if s is not None]
    return (max(steps) if steps else t), value


def trial_state(trial, metric="test_return_mean"):
    """What disk says about a trial: {status: COMPLETED | INTERRUPTED (a run that did not finish: killed, or still
    running elsewhere) | FAILED | NOT_STARTED, sacred_run, sacred_runs, model_dir, t_env, metric value}."""
    runs = sacred_runs(trial)
    state = {"sacred_runs": runs, "sacred_run": runs[-1] if runs else None, "model_dir": model_dir(trial),
             "t_env": None, "value": None}
    statuses = [run_status(load_json(os.path.join(d, "run.json"))) for d in runs]
    if "COMPLETED" in statuses:
        state["sacred_run"] = runs[statuses.index("COMPLETED")]
        state["status"] = "COMPLETED"
    elif not runs:
        state["status"] = "NOT_STARTED"
    else:
        state["status"] = "FAILED" if statuses[-1] == "FAILED" else "INTERRUPTED"
    if state["sacred_run"]:
        state["t_env"], state["value"] = run_progress(state["sacred_run"], metric)
    return state
