"""Which Sacred runs are compared, and how (the selection rules of scripts/plot.py and of any results tool).

    runs, skipped = find_runs("results/sacred", "test_return_mean")
    for group in group_runs(runs):
        grid, mean, std, n = aggregate(group.runs)

Selection (`find_runs`, over results/sacred/<name>/<env>/<id>/): a run is used when it is a training run (`run:
online` or `offline`; evaluate runs, `evaluate=True`, collection and generation runs never count as seeds), its
run.json says COMPLETED or RUNNING (a RUNNING run whose Sacred heartbeat is older than `stale_after` seconds died
without saying so: skipped as such), and its info.json has the metric. Everything else is returned in `skipped`
with the reason.

Grouping (`group_runs`): runs are seeds of one group when they share the name (the `name` config key: the alg
config's, or one given with `name=`, which so labels a group explicitly), the env, the kind (online: x = env
steps; offline: x = gradient steps, plotted in panels of their own) and every config key except the seed and the
keys in IGNORED / IGNORED_PREFIXES (outputs, run identity, logging cadence, run length, the machine; see there).
A group's label is the name followed by the keys whose values differ between the groups of its name, env and kind
(`qllm tfcaf=my_tfcaf.py lr=0.001`: a `*_path` key loses the suffix and a path value shows its file name).

Aggregation (`aggregate`): the curves of a group's runs on one grid spanning all of them (not cut to the shortest
run); a point averages the runs that reach it, and `n` says how many those are. A one-run group has no spread
(`format_score` prints `0.95 (n=1)`, never `± 0.000`).
"""
import glob
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

# config keys that do not make runs different experiments: the seed, where outputs go and the run's identity,
# logging and checkpoint cadence, run length (a shorter or still-running run is a seed that reaches fewer points),
# evaluation cadence, the machine and parallelism, resuming, and the LLM client (generation only)
IGNORED = frozenset({
    "seed", "env_args.seed", "local_results_path", "unique_token", "results_dir", "label", "env_config",
    "use_tensorboard", "mongo_url", "mongo_db", "save_model", "save_model_interval", "save_replay_buffer",
    "checkpoint_path", "load_step", "evaluate", "render", "save_replay", "log_interval", "runner_log_interval",
    "learner_log_interval", "test_interval", "t_max", "offline_steps", "offline_test_interval",
    "offline_log_interval", "offline_save_interval", "offline_lazy", "use_cuda", "device", "buffer_cpu_only",
    "torch_threads", "n_workers", "on_nonfinite", "tfcaf_timeout_s", "tfcaf_memory_mb", "name",
})
IGNORED_PREFIXES = ("llm.",)
MISSING = object()  # a key that a run's config lacks (an older run)
TRAINING_KINDS = {"online": "env steps", "offline": "gradient steps"}  # run mode -> the x axis of its curves
USED_STATUSES = ("COMPLETED", "RUNNING")
STALE_AFTER = 900  # s without a Sacred heartbeat (written every 10 s) after which a RUNNING run counts as dead


@dataclass
class Run:
    path: str
    name: str
    env: str
    kind: str  # online | offline
    config: dict  # flattened: nested dicts as dotted keys
    running: bool
    T: np.ndarray
    values: np.ndarray


@dataclass
class Group:
    name: str
    env: str
    kind: str
    settings: dict  # the config keys that tell this group from the others of its name, env and kind
    runs: list = field(default_factory=list)

    @property
    def label(self):
        return " ".join([self.name, *(f"{short_key(k)}={short_value(v)}" for k, v in sorted(self.settings.items()))])

    @property
    def n_running(self):
        return sum(r.running for r in self.runs)


def flatten(config, prefix=""):
    out = {}
    for k, v in config.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def ignored(key, extra=()):
    return key in IGNORED or key in extra or key.startswith(IGNORED_PREFIXES)


def short_key(key):
    return key[:-len("_path")] if key.endswith("_path") else key


def short_value(value):
    if isinstance(value, str) and os.sep in value:
        return os.path.basename(os.path.normpath(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(short_value(v)) for v in value) + "]"
    return "null" if value is None else value


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None  # missing, or being written


def run_status(run_json, now=None, stale_after=STALE_AFTER):
    """COMPLETED, RUNNING, STALE (RUNNING without a heartbeat for stale_after s; Sacred writes naive UTC times),
    or Sacred's other statuses."""
    status = (run_json or {}).get("status", "UNKNOWN")
    if status == "RUNNING" and run_json.get("heartbeat"):
        try:
            beat = datetime.fromisoformat(run_json["heartbeat"])
        except ValueError:
            return status
        now = now or (datetime.now(beat.tzinfo) if beat.tzinfo else datetime.now(timezone.utc).replace(tzinfo=None))
        if (now - beat).total_seconds() > stale_after:
            return "STALE"
    return status


def find_runs(sacred_root, metric, now=None, stale_after=STALE_AFTER):
    """([Run] used, [(run folder, why skipped)]) under sacred_root/<name>/<env>/<id>/."""
    runs, skipped = [], []
    for run_dir in sorted(glob.glob(os.path.join(sacred_root, "*", "*", "*"))):
        if not os.path.isdir(run_dir) or os.path.basename(run_dir) == "_sources":
            continue
        config = _json(os.path.join(run_dir, "config.json")) or {}
        mode = "evaluate" if config.get("evaluate") else config.get("run", "online")
        if mode not in TRAINING_KINDS:
            skipped.append((run_dir, f"a {mode} run, not a training run"))
            continue
        status = run_status(_json(os.path.join(run_dir, "run.json")), now, stale_after)
        if status not in USED_STATUSES:
            why = {"STALE": "RUNNING in run.json but without a heartbeat (the process died)",
                   "UNKNOWN": "no run.json status"}.get(status, status)
            skipped.append((run_dir, why))
            continue
        info = _json(os.path.join(run_dir, "info.json")) or {}
        if not info.get(metric) or not info.get(f"{metric}_T"):
            skipped.append((run_dir, f"no '{metric}' logged"))
            continue
        T, values = np.asarray(info[f"{metric}_T"], float), np.asarray(info[metric], float)
        order = np.argsort(T, kind="stable")
        env_dir = os.path.dirname(run_dir)
        runs.append(Run(run_dir, os.path.basename(os.path.dirname(env_dir)), os.path.basename(env_dir), mode,
                        flatten(config), status == "RUNNING", T[order], values[order]))
    return runs, skipped


def value(run, key):
    return run.config.get(key, MISSING)


def group_runs(runs, ignore=()):
    """[Group] of the runs: one per name, env, kind and the values of every key that is not ignored."""
    families = {}
    for run in runs:
        families.setdefault((run.name, run.env, run.kind), []).append(run)
    groups = []
    for (name, env, kind), members in sorted(families.items()):
        keys = sorted({k for r in members for k in r.config if not ignored(k, ignore)})
        differing = [k for k in keys if len({json.dumps(value(r, k), sort_keys=True, default=str)
                                             for r in members}) > 1]
        by_setting = {}
        for run in members:
            setting = tuple((k, value(run, k)) for k in differing)
            key = json.dumps([(k, None if v is MISSING else v) for k, v in setting], sort_keys=True, default=str)
            if key not in by_setting:
                by_setting[key] = Group(name, env, kind, {k: v for k, v in setting if v is not MISSING})
            by_setting[key].runs.append(run)
        groups += sorted(by_setting.values(), key=lambda g: g.label)
    return groups


def aggregate(runs, points=100):
    """(grid, mean, std, n): the runs on one grid from the earliest first to the latest last step. Runs logged on
    one schedule keep its steps (a shorter run stops earlier on it); others are interpolated onto `points` evenly
    spaced steps. A run counts at the points it reaches (up to half its logging interval past its last point) and
    nowhere else."""
    Ts = [r.T for r in runs]
    union = np.unique(np.concatenate(Ts))
    if len(union) == max(len(t) for t in Ts):  # one logging schedule (shorter runs stop earlier on it)
        grid = union
    else:
        start, end = min(t[0] for t in Ts), max(t[-1] for t in Ts)
        grid = np.linspace(start, end, points) if end > start else np.array([end])
    curves = np.full((len(runs), len(grid)), np.nan)
    for i, r in enumerate(runs):
        slack = 0.5 * float(np.median(np.diff(r.T))) if len(r.T) > 1 else 0.0
        reach = (grid >= r.T[0] - slack) & (grid <= r.T[-1] + slack)
        curves[i, reach] = np.interp(grid[reach], r.T, r.values)
    n = (~np.isnan(curves)).sum(0)
    keep = n > 0
    grid, curves, n = grid[keep], curves[:, keep], n[keep]
    mean = np.nanmean(curves, axis=0)
    std = np.sqrt(np.nanmean((curves - mean) ** 2, axis=0))
    return grid, mean, std, n


def format_score(values, digits=3):
    """`mean ± std (n=k)` over runs; a single run shows its value and n=1, with no spread."""
    values = np.asarray(values, float)
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f} (n={len(values)})"
