"""Which Sacred runs are compared, and how (the selection rules of scripts/plot.py and of any results tool).

    runs, skipped = find_runs("results/sacred", "test_return_mean")   # FileStorage folders
    runs, skipped = find_mongo_runs(db, "test_return_mean")            # or Sacred's MongoObserver database
    for group in group_runs(runs):                                     # or group_runs(runs, by=["lr"])
        grid, mean, std, n = aggregate(group.runs)

Selection (`find_runs`, over results/sacred/<name>/<env>/<id>/): a run is used when it is a training run (`run:
online` or `offline`; evaluate runs, `evaluate=True`, collection and generation runs never count as seeds), its
run.json says COMPLETED or RUNNING (a RUNNING run whose Sacred heartbeat is older than `stale_after` seconds died
without saying so: skipped as such), its config.json and info.json are readable, info.json has the metric, and a
COMPLETED run's last value of it is finite. Everything else is returned in `skipped` with the reason (a non-finite
final's reason, NonFinite, holds the run: `group_runs(runs, nonfinite=nonfinite_runs(skipped))` counts it in its
group's row, not scored). A RUNNING run is drawn (its curve so far) but has no final score: final scores, tables and
aggregates count the finished (COMPLETED) runs only, and say how many of a group's runs are still running.

Grouping (`group_runs`): runs are seeds of one group when they share the name (the `name` config key: the alg
config's, or one given with `name=`, which so labels a group explicitly), the env, the kind (online: x = env
steps; offline: x = gradient steps, plotted in panels of their own) and every config key except the seed and the
keys in IGNORED / IGNORED_PREFIXES (outputs, run identity, logging cadence, run length, the machine; see there).
A group's label is the name followed by the keys whose values differ between the groups of its name and kind, the
same keys in every env (an algorithm is a label across envs): those that differ within one env, and those that differ
across envs but are not an env config's (`env`, `env_args.*`, ...: ENV_KEYS) nor a task's own data (its dataset,
TFCAF, ...: TASK_DATA_KEYS), and that not only because older runs of one env lack them (`qllm tfcaf=my_tfcaf.py
lr=0.001`: a `*_path` key loses the suffix and a path value shows its file name).
`group_runs(runs, by=[...])` splits on the listed keys only (besides name, env and kind): runs that differ in
other keys are pooled as seeds, and each group lists those keys in `pooled`.

MongoDB (`find_mongo_runs`): the same rules over Sacred's MongoObserver layout (a `runs` collection with config,
status, heartbeat and info; a `metrics` collection of {run_id, name, steps, values}, read when info lacks the
metric); a run's name is its config's `name`, its env `utils.paths.env_label(config)`, its path
`mongo://<db>/<_id>`.

Resumed runs (`chain_segments`): a run started with `checkpoint_path=` records in info.json `resumed_from` the
checkpoint's step and the Sacred run that saved it. Its segments are one run, one seed: the curve of the run it
continues (whatever that one's status: killed, interrupted, failed or completed) up to the checkpoint's step and
before the continuation's first point, then the continuation's (the latest segment wins where they overlap), back
through every earlier resume. The run that a segment names is read from beside it where that folder holds the same
run (a copied or moved results folder), else from the folder it recorded. The earlier segments are then neither
runs of their own nor skipped runs (`Run.segments` lists them; `chained_note` says so in a tool's output). A resume
that changed settings (`resumed_from.changed`) and whose earlier segment is chained is kept in `Run.changed`, and
`changed_note` names it: the run is grouped by its latest settings. Mongo runs are chained the same way, through the
Mongo id and database name the checkpoint recorded (`resumed_from.sacred_run.mongo_db`; runs recorded before it was
saved are not chained).

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

from utils.files import load_json, read_json

# config keys that do not make runs different experiments: the seed, where outputs go and the run's identity,
# logging and checkpoint cadence, run length (a shorter or still-running run is a seed that reaches fewer points),
# evaluation cadence, the machine and parallelism, resuming, and the LLM client (generation only)
IGNORED = frozenset({
    "seed", "env_args.seed", "local_results_path", "unique_token", "results_dir", "label", "env_config",
    "use_tensorboard", "mongo_url", "mongo_db", "save_model", "save_model_interval", "save_replay_buffer",
    "checkpoint_path", "load_step", "evaluate", "render", "save_replay", "log_interval", "runner_log_interval",
    "learner_log_interval", "test_interval", "t_max", "offline_steps", "offline_test_interval",
    "offline_log_interval", "offline_save_interval", "offline_lazy", "offline_resume_changed_data", "use_cuda",
    "device", "buffer_cpu_only",
    "torch_threads", "n_workers", "on_nonfinite", "tfcaf_timeout_s", "tfcaf_memory_mb", "name", "label_out",
    "label_journal",
})
IGNORED_PREFIXES = ("llm.",)
ENV_KEYS = frozenset({"env", "test_nepisode", "test_greedy"})  # with env_args.*: what config/envs/*.yaml set
# keys that name a task's own data (its dataset, TFCAF, reference returns, LCA rankings ...): they differ across envs
# by design, so they split labels only where they differ within one env, like ENV_KEYS. Some also hold a method choice
# (offline_reward=label:x vs the env's reward): such variants are told apart only where one env holds both
TASK_DATA_KEYS = frozenset({
    "offline_dataset", "offline_expert", "offline_reward", "preference_set", "tfcaf_path", "reference_return_low",
    "reference_return_high", "lca.rankings", "lca.potential", "lca.rollout_checkpoint", "lca.keysteps_file",
})
MISSING = object()  # a key that a run's config lacks (an older run)
TRAINING_KINDS = {"online": "env steps", "offline": "gradient steps"}  # run mode -> the x axis of its curves
BUDGET_KEYS = {"online": "t_max", "offline": "offline_steps"}  # run mode -> the config key of its length in x
USED_STATUSES = ("COMPLETED", "RUNNING")
STALE_AFTER = 900  # s without a Sacred heartbeat (written every 10 s) after which a RUNNING run counts as dead
MONGO = "mongo://"  # a Mongo run's path: mongo://<db>/<_id>
NONFINITE = "NONFINITE"  # classify's status of a COMPLETED run whose final value is NaN or inf


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
    final_override: float = None  # its final model re-evaluated on more episodes (src/results.py --finals)
    final_override_step: float = None  # the step that re-evaluation's checkpoint was saved at, where it says
    segments: tuple = ()  # the Sacred run folders this resumed run continues, oldest first (chain_segments)
    changed: tuple = ()  # (step, {key: [before, after]}) per resume that changed settings, oldest first

    @property
    def final(self):
        """The run's final score: its last evaluation, or the re-evaluation of its final model where one is given.
        A RUNNING run has none yet (its last evaluation is not its final one): scores count finished runs only."""
        return float(self.values[-1]) if self.final_override is None else self.final_override

    @property
    def final_step(self):
        """The step of `final`: the re-evaluated checkpoint's where one is given and says, else the last
        evaluation's."""
        if self.final_override is not None and self.final_override_step is not None:
            return self.final_override_step
        return float(self.T[-1])

    @property
    def rescored(self):
        return self.final_override is not None

    @property
    def finished(self):
        return not self.running


@dataclass
class Group:
    name: str
    env: str
    kind: str
    settings: dict  # the label keys (see group_runs) and their values in this group
    runs: list = field(default_factory=list)
    pooled: tuple = ()  # with group_runs(by=...): keys whose values differ between this group's runs
    n_nonfinite: int = 0  # finished runs of this setting whose final value is NaN or inf: counted, not scored or drawn

    @property
    def label(self):
        return " ".join([self.name, *(f"{short_key(k)}={short_value(v)}" for k, v in sorted(self.settings.items()))])

    @property
    def n_running(self):
        return sum(r.running for r in self.runs)

    @property
    def finished(self):
        """The runs that have a final score (COMPLETED); the RUNNING ones are drawn but not scored."""
        return [r for r in self.runs if r.finished]


def budget(run):
    """The run's planned length on its x axis (t_max env steps online, offline_steps gradient steps offline); its
    last step where the config does not say (an older run)."""
    return run.config.get(BUDGET_KEYS[run.kind]) or float(run.T[-1])


def flatten(config, prefix=""):
    out = {}
    for k, v in config.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def env_key(key):
    """A key that an env config sets (config/envs/*.yaml), or one naming a task's own data (TASK_DATA_KEYS): it
    tells envs apart, not the algorithms run on them."""
    return key in ENV_KEYS or key in TASK_DATA_KEYS or key.startswith("env_args.")


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


def run_status(run_json, now=None, stale_after=STALE_AFTER):
    """COMPLETED, RUNNING, STALE (RUNNING without a heartbeat for stale_after s; Sacred writes naive UTC times),
    or Sacred's other statuses."""
    status = (run_json or {}).get("status") or "UNKNOWN"
    if status == "RUNNING" and run_json.get("heartbeat"):
        try:
            beat = datetime.fromisoformat(run_json["heartbeat"])
        except ValueError:
            return status
        now = now or (datetime.now(beat.tzinfo) if beat.tzinfo else datetime.now(timezone.utc).replace(tzinfo=None))
        if (now - beat).total_seconds() > stale_after:
            return "STALE"
    return status


NOT_TRAINING = "not a training run"  # the end of a skip reason: an evaluate or label run, no seed of a row


def classify(config, run_json, info, metric, now=None, stale_after=STALE_AFTER, info_error=None):
    """(kind, status, T, values) of a run, or (None, why it is skipped, None, None): the selection rules, whatever
    the storage; status NONFINITE: a COMPLETED run whose final value is NaN or inf (skipped, counted: `used`).
    `info_error`: why the run's info could not be read, where it could not."""
    mode = "evaluate" if config.get("evaluate") else config.get("run", "online")
    if mode not in TRAINING_KINDS:
        return None, f"{'an' if mode[:1] in 'aeiou' else 'a'} {mode} run, {NOT_TRAINING}", None, None
    status = run_status(run_json, now, stale_after)
    if status not in USED_STATUSES:
        why = {"STALE": "RUNNING in run.json but without a heartbeat (the process died)",
               "UNKNOWN": "no run.json status"}.get(status, status)
        return None, why, None, None
    if info_error:
        return None, f"info.json unreadable: {info_error}", None, None
    info = info or {}
    if not info.get(metric) or not info.get(f"{metric}_T"):
        return None, f"no '{metric}' logged", None, None
    T, values = np.asarray(info[f"{metric}_T"], float), np.asarray(info[metric], float)
    order = np.argsort(T, kind="stable")
    if status == "COMPLETED" and not np.isfinite(values[order][-1]):  # nan ± nan in every statistic it enters
        status = NONFINITE
    return mode, status, T[order], values[order]


def logged_metrics(info):
    """The metrics a run logged, from its info (Sacred's info.json): the keys holding a list of values beside their
    steps (`<key>_T`)."""
    info = info if isinstance(info, dict) else {}
    return sorted(k for k, v in info.items() if isinstance(v, list) and isinstance(info.get(f"{k}_T"), list))


def nonfinite_reason(metric):
    return f"final '{metric}' not finite (NaN or inf): left out of the scores and curves"


class NonFinite(str):
    """The skip reason of a finished run whose final value is NaN or inf (nonfinite_reason), holding the run
    (`.run`): group_runs(nonfinite=...) counts it in its group's row."""

    def __new__(cls, reason, run):
        self = super().__new__(cls, reason)
        self.run = run
        return self


def nonfinite_runs(skipped):
    """The runs skipped for a non-finite final value, from find_runs' (or any reader's) `skipped`."""
    return [why.run for _, why in skipped if isinstance(why, NonFinite)]


def used(run, status, metric):
    """(run, None) for a run classified `status`, or (None, NonFinite) where its final value is not finite."""
    return (None, NonFinite(nonfinite_reason(metric), run)) if status == NONFINITE else (run, None)


def _previous_segment(run_dir, info):
    """(the Sacred run folder that the resumed run at `run_dir` continues, the checkpoint's step) or (None, None),
    also for a run that branched off an earlier checkpoint into its own model folder. The run of the recorded id
    beside this one (where the recorded folder had the same name and env folders) comes first: results moved
    elsewhere, or copied (the copy is read, not the original outside the folder given, when both are one run)."""
    resumed = (info or {}).get("resumed_from")
    ref = resumed.get("sacred_run") if isinstance(resumed, dict) else None
    if not isinstance(ref, dict) or resumed.get("same_model_dir") is False:
        return None, None  # not resumed; or a branch (load_step: its own model folder), the run it left stays one
    step = resumed.get("step")
    folder = ref.get("dir")
    recorded = folder and os.path.isdir(folder)
    if folder and ref.get("id") is not None:
        here, there = os.path.normpath(run_dir).split(os.sep), os.path.normpath(folder).split(os.sep)
        beside = os.path.join(os.path.dirname(os.path.normpath(run_dir)), str(ref["id"]))
        if here[-3:-1] == there[-3:-1] and os.path.isdir(beside) and (not recorded or same_run(beside, folder)):
            return beside, step
    return (os.path.normpath(folder), step) if recorded else (None, None)


def same_run(a, b):
    """Whether the FileStorage folders a and b record one Sacred run (one is a copy of the other): the same start
    time (run.json) and config."""
    def identity(d):
        start = (load_json(os.path.join(d, "run.json")) or {}).get("start_time")
        return start, load_json(os.path.join(d, "config.json"))

    first = identity(a)
    return first[0] is not None and first == identity(b)


def chain_segments(run_dir, info, metric):
    """(info with `metric` over every segment of the resumed run at `run_dir`, [earlier segment folders, oldest
    first], [(step, {key: [before, after]}) of each resume that changed settings, oldest first]); see the module's
    doc. A run that was not resumed comes back as it is, with no segments and no changes."""
    def previous(folder, folder_info):
        found, step = _previous_segment(folder, folder_info)
        return None if found is None else (found, step, load_json(os.path.join(found, "info.json")) or {})

    return _chain(run_dir, info, metric, previous)


def _chain(where, info, metric, previous):
    """chain_segments over any storage: `previous(where, info)` gives (where the run that `where` continues is
    recorded, the checkpoint's step, its info) or None."""
    info = dict(info or {})
    T = [float(t) for t in info.get(f"{metric}_T") or []]
    values = list(info.get(metric) or [])
    segments, changes, seen, here, here_info = [], [], {_same(where)}, where, info
    while True:
        found = previous(here, here_info)
        if found is None or _same(found[0]) in seen:
            break  # a change at a resume with no earlier segment here (a branch, a folder gone) is in no curve
        resumed = here_info["resumed_from"]
        if resumed.get("changed"):
            changes.insert(0, (resumed.get("step"), resumed["changed"]))
        before, step, prev_info = found
        seen.add(_same(before))
        pT, pv = prev_info.get(f"{metric}_T") or [], prev_info.get(metric) or []
        first = min(T) if T else float("inf")
        kept = [(float(t), v) for t, v in zip(pT, pv) if t < first and (step is None or t <= step)]
        T, values = [t for t, _ in kept] + T, [v for _, v in kept] + values
        segments.insert(0, before)
        here, here_info = before, prev_info
    if segments:
        info[metric], info[f"{metric}_T"] = values, T
    return info, segments, changes


def _same(where):
    """One spelling of where a run is recorded: a FileStorage folder's real path, a Mongo run's mongo://<db>/<id>."""
    return where if where.startswith(MONGO) else os.path.realpath(where)


def chained_note(runs):
    """A line for a tool's output naming the resumed runs whose segments were chained into one run each ("" if
    none)."""
    chained = [r for r in runs if r.segments]
    if not chained:
        return ""
    return (f"{len(chained)} resumed run(s) chained with the segments they continue (one run, one seed each; the "
            f"latest segment wins where they overlap): "
            + "; ".join(f"{r.path} <- {' <- '.join(reversed(r.segments))}" for r in chained))


def changed_note(runs):
    """A line naming the resumed runs that changed settings at a resume ("" if none): such a run is grouped by its
    latest settings, its curve before the change included."""
    changed = [r for r in runs if r.changed]
    if not changed:
        return ""
    return ("resumed runs that changed settings, grouped by their latest settings (the curve before the change "
            "included): " + "; ".join(
                f"{r.path}: " + ", ".join(f"{k} {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in keys.items())
                + f" at step {'?' if step is None else step}" for r in changed for step, keys in r.changed))


def drop_chained(runs, skipped):
    """(runs, skipped) without the folders that are earlier segments of a chained run (counted in it)."""
    consumed = {_same(s) for r in runs for s in r.segments}
    return ([r for r in runs if _same(r.path) not in consumed],
            [(p, why) for p, why in skipped if _same(p) not in consumed])


def is_run_dir(path):
    """A Sacred run folder: it holds run.json (a model folder, results/models/<run>/, holds a config.json only)."""
    return os.path.isfile(os.path.join(path, "run.json"))


def read_run(run_dir, metric, now=None, stale_after=STALE_AFTER):
    """(Run, None) for a FileStorage run folder <name>/<env>/<id>/ that is used, else (None, why skipped). A resumed
    run comes with the segments it continues (chain_segments)."""
    config, why = read_json(os.path.join(run_dir, "config.json"))
    if why or not isinstance(config, dict):
        return None, ("config.json missing" if why == "missing"  # a run just started: Sacred writes run.json first
                      else f"config.json unreadable: {why or 'not a JSON object'}")
    info, info_error = read_json(os.path.join(run_dir, "info.json"))
    info, segments, changes = chain_segments(run_dir, info, metric)
    kind, status, T, values = classify(config, load_json(os.path.join(run_dir, "run.json")), info, metric, now,
                                       stale_after, info_error=None if info_error == "missing" else info_error)
    if kind is None:
        return None, status
    env_dir = os.path.dirname(os.path.normpath(run_dir))
    return used(Run(run_dir, os.path.basename(os.path.dirname(env_dir)), os.path.basename(env_dir), kind,
                    flatten(config), status == "RUNNING", T, values, segments=tuple(segments),
                    changed=tuple(changes)), status, metric)


def find_runs(sacred_root, metric, now=None, stale_after=STALE_AFTER, prefix=None):
    """([Run] used, [(run folder, why skipped)]) under sacred_root/<name>/<env>/<id>/ (only the folders under
    `prefix` when given); the earlier segments of a resumed run are in it, not listed apart."""
    runs, skipped = [], []
    for run_dir in sorted(glob.glob(os.path.join(sacred_root, "*", "*", "*"))):
        if not is_run_dir(run_dir):  # _sources, a model folder or its checkpoints (results/models/...)
            continue
        if prefix and not run_dir.startswith(prefix):  # before chaining: a segment stays when its run is elsewhere
            continue
        run, why = read_run(run_dir, metric, now, stale_after)
        if run is None:
            skipped.append((run_dir, why))
        else:
            runs.append(run)
    return drop_chained(runs, skipped)


def find_mongo_runs(db, metric, now=None, stale_after=STALE_AFTER, query=None):
    """([Run] used, [(mongo://<db>/<id>, why skipped)]) of the runs in a Sacred MongoObserver database `db` (a
    pymongo or mongomock Database); `query` filters the runs collection. A resumed run is chained with the runs it
    continues (chain_segments), found by the Mongo id its checkpoint recorded (run.setup.sacred_run_ref)."""
    from utils.paths import env_label

    runs, skipped = [], []
    for doc in db["runs"].find(query or {}, sort=[("_id", 1)]):
        path = f"{MONGO}{db.name}/{doc['_id']}"
        config = doc.get("config") or {}
        info, segments, changes = _chain(path, _mongo_info(db, doc, metric), metric,
                                lambda where, info: _mongo_previous(db, info, metric))
        beat = doc.get("heartbeat")
        run_json = {"status": doc.get("status"),
                    "heartbeat": beat.isoformat() if isinstance(beat, datetime) else beat}
        kind, status, T, values = classify(config, run_json, info, metric, now, stale_after)
        if kind is None:
            skipped.append((path, status))
            continue
        name = config.get("name") or (doc.get("experiment") or {}).get("name") or "?"
        run, why = used(Run(path, str(name), env_label(config) if config.get("env") else "?", kind,
                            flatten(config), status == "RUNNING", T, values, segments=tuple(segments),
                            changed=tuple(changes)), status, metric)
        if run is None:
            skipped.append((path, why))
        else:
            runs.append(run)
    return drop_chained(runs, skipped)


def _mongo_info(db, doc, metric):
    """A Mongo run's info, with `metric` from the metrics collection when the info lacks it (log_scalar only)."""
    info = dict(doc.get("info") or {})
    if not info.get(metric):
        entry = db["metrics"].find_one({"run_id": doc["_id"], "name": metric})
        if entry:
            info[metric], info[f"{metric}_T"] = entry.get("values", []), entry.get("steps", [])
    return info


def _mongo_previous(db, info, metric):
    """(mongo://<db>/<id>, the checkpoint's step, its info) of the run that the resumed Mongo run with `info`
    continues, or None: not resumed, a branch (its own model folder), or a checkpoint saved by a run that this
    database did not record (its id then names a FileStorage folder, not a Mongo run)."""
    resumed = (info or {}).get("resumed_from")
    ref = resumed.get("sacred_run") if isinstance(resumed, dict) else None
    if not isinstance(ref, dict) or resumed.get("same_model_dir") is False or ref.get("mongo_db") != db.name:
        return None
    doc = db["runs"].find_one({"_id": ref.get("id")})
    return None if doc is None else (f"{MONGO}{db.name}/{doc['_id']}", resumed.get("step"),
                                     _mongo_info(db, doc, metric))


def value(run, key):
    return run.config.get(key, MISSING)


def differs(runs, key, present_only=False):
    """Whether the runs hold two values of `key` (a run lacking it counts as one, unless present_only)."""
    values = (value(r, key) for r in runs)
    return len({json.dumps(v, sort_keys=True, default=str) for v in values
                if not (present_only and v is MISSING)}) > 1


def group_runs(runs, ignore=(), by=None, nonfinite=()):
    """[Group] of the runs: one per name, env, kind and the values of every key that is not ignored, or, with
    `by` (config keys; "alg", "name" and "env" are always split on), of the listed keys only. `nonfinite`: runs
    skipped for a non-finite final value (nonfinite_runs), counted in the group of their setting (n_nonfinite)."""
    split_always = {"alg", "name", "env"}
    families, algorithms = {}, {}
    for run in runs:
        families.setdefault((run.name, run.env, run.kind), []).append(run)
        algorithms.setdefault((run.name, run.kind), []).append(run)
    label_keys = {}  # (name, kind) -> the keys of its labels, the same in every env (an algorithm is a label)
    for (name, kind), members in algorithms.items():
        if by is None:
            keys = sorted({k for r in members for k in r.config if not ignored(k, ignore)})
        else:
            keys = [k for k in by if k not in split_always]
        envs = [f for (n, _, k), f in families.items() if (n, k) == (name, kind)]
        # across envs, a key that older runs of one env lack is no difference (their env has no other value)
        label_keys[name, kind] = [k for k in keys if any(differs(f, k) for f in envs)
                                  or (not env_key(k) and differs(members, k, present_only=True))]
    unscored = {}
    for run in nonfinite:
        unscored.setdefault((run.name, run.env, run.kind), []).append(run)
    groups = []
    for (name, env, kind), members in sorted(families.items()):
        differing = label_keys[name, kind]
        by_setting = {}
        for run in members:
            key, settings = _setting(run, differing)
            by_setting.setdefault(key, Group(name, env, kind, settings)).runs.append(run)
        for run in unscored.get((name, env, kind), ()):  # a setting with no other run: named in the notes only
            group = by_setting.get(_setting(run, differing)[0])
            if group is not None and _one_more_seed(group, run, by, ignore, split_always):
                group.n_nonfinite += 1
        if by is not None:
            for g in by_setting.values():
                all_keys = sorted({k for r in g.runs for k in r.config if not ignored(k, ignore)})
                g.pooled = tuple(k for k in all_keys if differs(g.runs, k))
        groups += sorted(by_setting.values(), key=lambda g: g.label)
    return groups


def _one_more_seed(group, run, by, ignore, split_always):
    """Whether `run` (left out of the labels: its final value is not finite) is a seed of the group's setting: equal
    to the group's runs on every key they agree on (with `by`, on those keys), not a setting of its own that merely
    matches the label's keys."""
    keys = ([k for k in by if k not in split_always] if by is not None else
            {k for r in (*group.runs, run) for k in r.config if not ignored(k, ignore)})
    return all(differs(group.runs, k) or not differs([*group.runs, run], k) for k in keys)


def _setting(run, keys):
    """(a key of the run's values of `keys`, {key: value} of those its config has)."""
    setting = tuple((k, value(run, k)) for k in keys)
    return (json.dumps([(k, None if v is MISSING else v) for k, v in setting], sort_keys=True, default=str),
            {k: v for k, v in setting if v is not MISSING})


def curves(runs, points=100):
    """(grid, values): the runs on one grid from the earliest first to the latest last step, values[i, j] the
    run i at grid[j] or NaN where it does not reach. Runs logged on one schedule keep its steps (a shorter run stops
    earlier on it); others are interpolated onto `points` evenly spaced steps. A run counts at the points it
    reaches (up to half its logging interval past its last point) and nowhere else."""
    Ts = [r.T for r in runs]
    union = np.unique(np.concatenate(Ts))
    if len(union) == max(len(t) for t in Ts):  # one logging schedule (shorter runs stop earlier on it)
        grid = union
    else:
        start, end = min(t[0] for t in Ts), max(t[-1] for t in Ts)
        grid = np.linspace(start, end, points) if end > start else np.array([end])
    values = np.full((len(runs), len(grid)), np.nan)
    for i, r in enumerate(runs):
        slack = 0.5 * float(np.median(np.diff(r.T))) if len(r.T) > 1 else 0.0
        reach = (grid >= r.T[0] - slack) & (grid <= r.T[-1] + slack)
        values[i, reach] = np.interp(grid[reach], r.T, r.values)
    keep = (~np.isnan(values)).any(0)
    return grid[keep], values[:, keep]


def aggregate(runs, points=100):
    """(grid, mean, std, n) of `curves(runs, points)`: n says how many runs each point averages."""
    grid, values = curves(runs, points)
    n = (~np.isnan(values)).sum(0)
    mean = np.nanmean(values, axis=0)
    std = np.sqrt(np.nanmean((values - mean) ** 2, axis=0))
    return grid, mean, std, n


def format_score(values, digits=3):
    """`mean ± std (n=k)` over runs; a single run shows its value and n=1, with no spread."""
    values = np.asarray(values, float)
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f} (n={len(values)})"
