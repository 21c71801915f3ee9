"""Which runs a results call reads: Sacred FileStorage folders, sweep folders and MongoDB.

A path argument is one of
  * a Sacred root (results/sacred: <name>/<env>/<id>/ below it), or a folder of one name or one env in it;
  * a single run folder (it holds run.json);
  * a sweep folder, results/sweeps/<name>/ with manifest.json (src/sweeps/manifest.py): {"trials": [{"id",
    "status", "sacred_run", "sacred_runs", ...}]}: each trial's `sacred_run` (the run that counts: its completed
    one, else its latest attempt), else the last of `sacred_runs`, else `sacred_dir` / `run_dir`; relative paths
    are taken from the working directory, then from the manifest's folder. A trial without a Sacred run yet is
    counted as skipped with its status.
The selection and grouping rules are utils/runs.py's (training runs that COMPLETED or are RUNNING; the rest is
returned as skipped, with the reason).
"""
import difflib
import json
import os

import numpy as np

from utils.files import load_json, read_json
from utils.runs import (
    MONGO,
    STALE_AFTER,
    drop_chained,
    find_mongo_runs,
    find_runs,
    is_run_dir,
    logged_metrics,
    read_run,
)

MANIFEST = "manifest.json"
RUN_KEYS = ("sacred_run", "sacred_dir", "sacred_path", "run_dir")
REEVALUATED = "test_return_mean"  # the metric of scripts/reevaluate.py's `mean` (its `metrics` hold the rest)


def manifest_trials(manifest):
    """The trial records of a sweep manifest: {"trials": [...]}, {"trials": {id: {...}}} or a plain list."""
    trials = manifest.get("trials", manifest) if isinstance(manifest, dict) else manifest
    if isinstance(trials, dict):
        trials = [{"trial_id": k, **v} if isinstance(v, dict) else {"trial_id": k} for k, v in trials.items()]
    return [t for t in trials if isinstance(t, dict)]


def trial_run_dirs(trial):
    """The Sacred run folder of a manifest trial, as a list (empty: none yet). A trial retried from a checkpoint
    lists every attempt in `sacred_runs`; `sacred_run` is the one that counts (else the last attempt)."""
    for key in RUN_KEYS:
        if trial.get(key):
            return [trial[key]]
    dirs = trial.get("sacred_runs")
    return [dirs[-1]] if isinstance(dirs, list) and dirs else []


def read_sweep(folder, metric, now=None, stale_after=STALE_AFTER):
    path = os.path.join(folder, MANIFEST)
    manifest, why = read_json(path)
    if why:  # rewritten atomically by the sweep: a cut copy, or a full disk
        raise SystemExit(f"{path}: not a readable sweep manifest ({why}); restore it, or give the sweep's Sacred "
                         f"run folders (results/sacred/<name>/<env>) instead of {folder}")
    runs, skipped, seen = [], [], set()
    for i, trial in enumerate(manifest_trials(manifest)):
        name = trial.get("trial_id") or trial.get("id") or trial.get("name") or f"trial {i}"
        dirs = trial_run_dirs(trial)
        if not dirs:
            status = trial.get("status") or "not started"
            skipped.append((f"{folder}#{name}", f"no Sacred run in the manifest (trial {status})"))
            continue
        for d in dirs:
            d = d if os.path.isabs(d) or os.path.isdir(d) else os.path.join(folder, d)
            d = os.path.normpath(d)
            if d in seen:
                continue
            seen.add(d)
            if not os.path.isdir(d):
                skipped.append((d, "the manifest's Sacred run folder does not exist (a trial on another node: "
                                   "give its shared results path or --mongo-url)"))
                continue
            run, why = read_run(d, metric, now, stale_after)
            (runs.append(run) if run else skipped.append((d, why)))
    return runs, skipped


def read_path(path, metric, now=None, stale_after=STALE_AFTER):
    """([Run], [(where, why skipped)]) of one path argument (see the module's doc)."""
    path = os.path.normpath(path)
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return read_sweep(path, metric, now, stale_after)
    if is_run_dir(path):
        run, why = read_run(path, metric, now, stale_after)
        return ([run], []) if run else ([], [(path, why)])
    if not os.path.isdir(path):
        raise SystemExit(f"{path}: no such folder (give results/sacred, a run folder or results/sweeps/<name>)")
    for depth in (0, 1, 2):  # the root, one name's folder, one env's folder
        if depth == 0:
            runs, skipped = find_runs(path, metric, now, stale_after)
        else:
            parents = path
            for _ in range(depth):
                parents = os.path.dirname(parents)
            runs, skipped = find_runs(parents, metric, now, stale_after, prefix=path + os.sep)
        if runs or skipped:
            return runs, skipped
    if os.path.isdir(os.path.join(path, "sacred")):  # `results` given for `results/sacred`
        raise SystemExit(f"{path}: no Sacred runs in it; did you mean {os.path.join(path, 'sacred')}?")
    return [], []


def read_mongo(url, db_name, metric, now=None, stale_after=STALE_AFTER, client_factory=None):
    """Runs of Sacred's MongoObserver database `db_name` at `url` (`client_factory(url)`: pymongo.MongoClient by
    default; tests pass mongomock's)."""
    import pymongo

    client = (client_factory or (lambda u: pymongo.MongoClient(u, serverSelectionTimeoutMS=10000)))(url)
    return find_mongo_runs(client[db_name], metric, now, stale_after)


def load(paths, metric, mongo_url=None, mongo_db="pymarl", now=None, stale_after=STALE_AFTER,
         mongo_client_factory=None):
    """([Run], [(where, why skipped)]) of every path and, with mongo_url, of the Mongo database; a run found twice
    (the same folder through two arguments) counts once, and so does a resumed run given with its earlier segments
    (utils.runs.chain_segments)."""
    runs, skipped, seen = [], [], set()
    for path in paths:
        r, s = read_path(path, metric, now, stale_after)
        for run in r:
            key = os.path.realpath(run.path)
            if key not in seen:
                seen.add(key)
                runs.append(run)
        skipped += [x for x in s if os.path.realpath(x[0]) not in seen and not seen.add(os.path.realpath(x[0]))]
    if mongo_url:
        r, s = read_mongo(mongo_url, mongo_db, metric, now, stale_after, mongo_client_factory)
        runs += r
        skipped += s
    return drop_chained(runs, skipped)


def metric_hint(metric, skipped):
    """"; did you mean X, Y?" naming the logged metrics (info.json keys with a `<key>_T`) of the skipped run folders
    closest to `metric`, or "" (a misspelled --metric skips every run)."""
    names = set()
    for where, _ in skipped:
        if not where.startswith(MONGO):
            names.update(logged_metrics(load_json(os.path.join(where, "info.json"))))
    close = difflib.get_close_matches(metric, sorted(names), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def apply_finals(runs, files, metric):
    """Put re-evaluated final scores (scripts/reevaluate.py's reevaluate.json: rows with sacred_run, mean, episodes,
    policy, of test_return_mean, and `metrics`, every test stat of the evaluation) in place of the runs' last
    evaluations of `metric`, matched by run folder. Returns a note on what was replaced; SystemExit when a file is
    unreadable, its rows do not name their runs, or none of them measured `metric`."""
    by_run, held = {}, set()
    for path in files:
        try:
            with open(path) as f:
                rows = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"--finals {path}: not a readable reevaluate.json ({e})") from None
        if not isinstance(rows, list) or any(not isinstance(r, dict) or not r.get("sacred_run") for r in rows):
            raise SystemExit(f"--finals {path}: its rows do not name their Sacred runs (sacred_run): run "
                             f"scripts/reevaluate.py again to rewrite it")
        for r in rows:
            metrics = {REEVALUATED: r.get("mean"), **(r.get("metrics") or {})}
            held.update(metrics)
            if metric not in metrics:
                continue  # an older row, or an env that does not log it: the run keeps its last evaluation
            try:
                value, episodes, policy = float(metrics[metric]), int(r["episodes"]), str(r["policy"])
                step = None if r.get("step") is None else float(r["step"])  # older rows do not say
            except (KeyError, TypeError, ValueError) as e:
                raise SystemExit(f"--finals {path}: the row of {r['sacred_run']} lacks a valid {metric}, episodes or "
                                 f"policy ({e!r}): run scripts/reevaluate.py again to rewrite it") from None
            if not np.isfinite(value):
                raise SystemExit(f"--finals {path}: the re-evaluation of {r['sacred_run']} is {value}, not a score")
            key = os.path.realpath(r["sacred_run"])
            if key in by_run and by_run[key][0] != value:
                raise SystemExit(f"--finals: {r['sacred_run']} has two re-evaluations ({by_run[key][0]:g} in "
                                 f"{by_run[key][3]}, {value:g} in {path}): give one file per run")
            by_run[key] = (value, episodes, policy, path, step)
    if metric != REEVALUATED and metric not in held:
        what = f"re-evaluations of {', '.join(sorted(held))}" if held else "no re-evaluations"
        raise SystemExit(f"--finals holds {what}, not of {metric}: drop --finals, use one of those with --metric, or "
                         f"run scripts/reevaluate.py again (older rows hold test_return_mean only)")
    used = []
    for run in runs:
        hit = by_run.get(os.path.realpath(run.path))
        if hit is not None:
            run.final_override, run.final_override_step = hit[0], hit[4]
            used.append(hit)
    if runs and not used:  # a file of other runs: the tables would silently show last evaluations
        example = next(iter(by_run), None) or "none"
        raise SystemExit(f"--finals {', '.join(files)} re-evaluated none of the {len(runs)} runs read (it names "
                         f"runs such as {example}): give the reevaluate.json of these runs' sweep "
                         f"(scripts/reevaluate.py <sweep folder>), or drop --finals")
    kinds = sorted({f"{episodes} {policy}" for _, episodes, policy, _, _ in used})
    note = (f"final scores of {len(used)} of {len(runs)} runs: their final models evaluated again on "
            f"{' / '.join(kinds) or 'no'} episodes (--finals {', '.join(files)})")
    if len(used) < len(runs):
        note += f"; the other {len(runs) - len(used)}: their last evaluation"
    return note, len(used)
