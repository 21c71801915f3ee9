"""Final scores and their statistics: per group (mean ± std over runs, percentile-bootstrap 95% CI of the mean),
normalised scores, and across tasks (IQM and mean with stratified bootstrap CIs, performance profiles).

The bootstrap is rliable's (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"):
`rliable.library.get_interval_estimates` resamples the runs of each task independently (stratified over tasks),
and `rliable.metrics.aggregate_iqm` / `aggregate_mean` are the point estimates. rliable draws its resampling
indices from numpy's global generator, so each estimate here runs under a fixed seed (`seed=`) and restores the
generator afterwards: the same results give the same intervals.

A task is an env (a panel); an algorithm is a group label of one kind (online or offline) over the envs it ran
on. A one-run group has no spread and no interval (issue 12's rule: n=1, never ± 0).
"""
import contextlib
import json
import os
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
# percentile-bootstrap 95% CIs of the mean undercover at few runs: their coverage of a normal mean, simulated
# (2000 samples x 1000 resamples; the audit's run agreed within 3 points)
SMALL_N = 10
SMALL_N_COVERAGE = {2: 0.51, 3: 0.75, 5: 0.84, 10: 0.90}
# CODI's reference datasets (config/runs/collect.yaml): low = one expert agent among random ones, high = all expert;
# a folder without them falls back to random and expert
REFERENCE_LOW = ("imbalanced_1e", "random")
REFERENCE_HIGH = ("expert_all", "expert")


@contextlib.contextmanager
def seeded(seed):
    """numpy's global generator (which rliable's bootstrap draws from) at `seed`, restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval(score_dict, func, reps, seed):
    """rliable's point estimates and 95% stratified bootstrap intervals: {key: (point [k], ci [2, k])}. A value of
    score_dict is a (runs x tasks) matrix or a list of per-task run arrays (tasks with different numbers of runs,
    each resampled on its own)."""
    from rliable import library as rly

    with seeded(seed):
        points, cis = rly.get_interval_estimates(score_dict, func, reps=reps, confidence_interval_size=CONFIDENCE)
    return {k: (np.atleast_1d(points[k]), np.asarray(cis[k]).reshape(2, -1)) for k in score_dict}


def iqm(scores):
    """The interquartile mean of the pooled scores (rliable.metrics.aggregate_iqm: scipy's 25% trimmed mean)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.concatenate([np.ravel(s) for s in scores])))


def _iqm_and_mean(*tasks):
    """IQM of the pooled scores and the mean of the per-task means (rliable's aggregate_mean: every task weighs the
    same)."""
    return np.array([iqm(tasks), float(np.mean([np.mean(t) for t in tasks]))])


# ------------------------------------------------------------------------------------------------ normalisation
@dataclass
class Normaliser:
    """score -> (score - low) / (high - low), with (low, high) per env or one pair for all."""
    description: str
    refs: dict  # env -> (low, high); key None: every env

    def bounds(self, env):
        if env in self.refs:
            return self.refs[env]
        if None in self.refs:
            return self.refs[None]
        raise SystemExit(f"--normalise: no reference returns for env '{env}' ({self.description}); "
                         f"it has: {', '.join(sorted(str(k) for k in self.refs))}")

    def __call__(self, env, scores):
        low, high = self.bounds(env)
        return (np.asarray(scores, float) - low) / (high - low)


def _pick(rows, names, wanted, what, where):
    for name in names:
        if name in rows:
            return name, rows[name]
    raise SystemExit(f"--normalise: {where} has no {what} dataset ({' or '.join(names)}); it has: "
                     f"{', '.join(sorted(rows)) or 'none'} (choose with FILE:LOW,HIGH)" if wanted is None else
                     f"--normalise: {where} has no dataset '{wanted}'; it has: {', '.join(sorted(rows)) or 'none'}")


def reference_normaliser(spec, envs):
    """A Normaliser from a dataset folder's returns.json (results/datasets/<env>/<behaviour run>/) or from
    results/datasets/reference_returns.json (every env of the reference recipes), `FILE[:LOW,HIGH]` with dataset
    names (default: CODI's imbalanced_1e and expert_all, else random and expert): R_low and R_high are those
    datasets' mean returns."""
    path, _, names = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    if os.path.isdir(path):
        for candidate in ("returns.json", "reference_returns.json"):
            if os.path.isfile(os.path.join(path, candidate)):
                path = os.path.join(path, candidate)
                break
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--normalise: {path} is not JSON ({e})") from None
    if not isinstance(data, dict) or ("datasets" not in data and not all(isinstance(t, dict) for t in data.values())):
        raise SystemExit(f"--normalise: {path} is not a dataset returns file (results/datasets/<env>/returns.json or "
                         f"results/datasets/reference_returns.json)")
    if names and len(names.split(",")) != 2:
        raise SystemExit(f"--normalise {spec}: after the file, two dataset names LOW,HIGH (e.g. :random,expert), got "
                         f"{names!r}")
    low_name, high_name = names.split(",") if names else (None, None)
    if "datasets" in data:  # one env's folder: its env is the folder above the behaviour run (or the only env)
        parts = os.path.abspath(path).split(os.sep)
        env = next((p for p in reversed(parts[:-1]) if p in envs), None)
        if env is None and len(envs) == 1:
            env = next(iter(envs))
        if env is None:
            raise SystemExit(f"--normalise: cannot tell which env {path} is for (none of {sorted(envs)} is in "
                             "its path); use results/datasets/reference_returns.json or one env per call")
        tables = {env: data}
    else:
        tables = data
    refs = {}
    for env, table in tables.items():
        rows = {r["dataset"]: r for r in table.get("datasets", [])}
        where = f"{path} ({env})"
        low_ds, low = _pick(rows, [low_name] if low_name else REFERENCE_LOW, low_name, "low reference", where)
        high_ds, high = _pick(rows, [high_name] if high_name else REFERENCE_HIGH, high_name, "high reference", where)
        if high["return_mean"] == low["return_mean"]:
            raise SystemExit(f"--normalise: {where}: {low_ds} and {high_ds} have the same mean return")
        refs[env] = (float(low["return_mean"]), float(high["return_mean"]))
        names = f"{low_ds}, {high_ds}"
    return Normaliser(f"(R - R_low) / (R_high - R_low), references {names} from {path}", refs)


def make_normaliser(spec, finals_by_env):
    """None, or the Normaliser that `--normalise` asks for: `low,high` (one min-max range for every env), `minmax`
    (per env, the lowest and highest final score of any run), or a dataset returns file (`reference_normaliser`)."""
    if not spec:
        return None
    parts = spec.split(",")
    if len(parts) == 2:
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            if low == high or not np.isfinite([low, high]).all():
                raise SystemExit(f"--normalise low,high: two different finite numbers, got {spec}")
            return Normaliser(f"min-max with low={low:g}, high={high:g}", {None: (low, high)})
    if spec == "minmax":
        refs = {}
        for env, scores in finals_by_env.items():
            low, high = float(np.min(scores)), float(np.max(scores))
            refs[env] = (low, high if high > low else low + 1.0)
        return Normaliser("per env min-max over the final scores of all runs", refs)
    if not os.path.exists(spec.partition(":")[0]) and not os.path.exists(spec):
        raise SystemExit(f"--normalise {spec}: not 'low,high', 'minmax' or a dataset returns file")
    return reference_normaliser(spec, set(finals_by_env))


# ------------------------------------------------------------------------------------------------ per group
@dataclass
class GroupScores:
    group: object  # utils.runs.Group
    finals: np.ndarray  # each finished run's last logged value (or its re-evaluation)
    steps: np.ndarray  # each finished run's final step (its last evaluation's, or its re-evaluated checkpoint's)
    rescored: int = 0  # how many of the finals are re-evaluations (--finals)
    ci: tuple = None  # percentile-bootstrap 95% CI of the mean over runs; None for one run
    normalised: np.ndarray = None
    normalised_ci: tuple = None

    @property
    def n(self):
        return len(self.finals)


def group_scores(groups, normaliser=None, reps=2000, seed=0):
    """[GroupScores]: final scores of each group's finished runs, with the bootstrap CI of their mean (rliable,
    resampling runs). A group whose runs are all still running has no final score yet and no entry (see
    report.unscored_note); a RUNNING run's last evaluation is not its final one."""
    out = []
    for g in groups:
        if not g.finished:
            continue
        finals = np.array([r.final for r in g.finished], float)
        steps = np.array([r.final_step for r in g.finished], float)
        gs = GroupScores(g, finals, steps, sum(r.rescored for r in g.finished))
        if normaliser is not None:
            gs.normalised = normaliser(g.env, finals)
        if len(finals) > 1:
            gs.ci = mean_ci(finals, reps, seed)
            if gs.normalised is not None:
                gs.normalised_ci = mean_ci(gs.normalised, reps, seed)
        out.append(gs)
    return out


def small_n_note(ns):
    """A line when an interval rests on fewer than SMALL_N runs (ns: the run counts behind intervals), else ""."""
    small = sorted({int(n) for n in ns if 1 < n < SMALL_N})
    if not small:
        return ""
    return (f"percentile-bootstrap 95% CIs of fewer than {SMALL_N} runs (here n={', '.join(map(str, small))}) "
            f"undercover: for normal data they hold the true mean about {coverage_text()} (simulated)")


def coverage_text():
    """The simulated coverage of a percentile-bootstrap 95% CI of the mean below SMALL_N runs: '51% at n=2, ...'."""
    return ", ".join(f"{p:.0%} at n={n}" for n, p in SMALL_N_COVERAGE.items() if n < SMALL_N)


def mean_ci(values, reps=2000, seed=0):
    """95% bootstrap CI (percentile, rliable) of the mean of `values` (runs of one task)."""
    [(_, ci)] = interval({"x": np.asarray(values, float).reshape(-1, 1)}, lambda s: np.array([np.mean(s)]),
                         reps, seed).values()
    return float(ci[0, 0]), float(ci[1, 0])


# ------------------------------------------------------------------------------------------------ across tasks
@dataclass
class Aggregate:
    label: str  # the algorithm: a group label
    kind: str
    tasks: list  # envs
    runs: list  # runs per task
    iqm: float
    iqm_ci: tuple  # None when every task has one run
    mean: float
    mean_ci: tuple
    scores: list  # per task: the scores (normalised where asked) of its runs


def algorithm_scores(scores, normalised):
    """{(kind, label): {env: scores}} from [GroupScores]: an algorithm's tasks are the envs it ran on."""
    table = {}
    for gs in scores:
        values = gs.normalised if normalised and gs.normalised is not None else gs.finals
        table.setdefault((gs.group.kind, gs.group.label), {})[gs.group.env] = values
    return table


def aggregates(scores, normalised=True, reps=2000, seed=0):
    """[Aggregate]: per algorithm, IQM and mean over its tasks' runs with 95% stratified bootstrap CIs (rliable:
    runs resampled within each task)."""
    out = []
    for (kind, label), by_env in sorted(algorithm_scores(scores, normalised).items()):
        tasks = sorted(by_env)
        per_task = [np.asarray(by_env[t], float) for t in tasks]
        iqm_value, mean_value = _iqm_and_mean(*per_task)
        iqm_ci = mean_ci_ = None
        if max(len(x) for x in per_task) > 1:
            data = (np.stack(per_task, axis=1) if len({len(x) for x in per_task}) == 1
                    else [x.reshape(-1) for x in per_task])
            func = (lambda s: _iqm_and_mean(*s.T)) if isinstance(data, np.ndarray) else _iqm_and_mean
            [(_, ci)] = interval({label: data}, func, reps, seed).values()
            iqm_ci, mean_ci_ = (float(ci[0, 0]), float(ci[1, 0])), (float(ci[0, 1]), float(ci[1, 1]))
        out.append(Aggregate(label, kind, tasks, [len(x) for x in per_task], iqm_value, iqm_ci, mean_value,
                             mean_ci_, per_task))
    return out


def performance_profiles(aggs, taus=None, reps=2000, seed=0):
    """(taus, {label: (profile, ci [2, len(taus)])}): the fraction of runs scoring above tau (each task weighs the
    same: rliable's score distribution), with 95% stratified bootstrap bands."""
    pooled = np.concatenate([np.ravel(s) for a in aggs for s in a.scores])
    if taus is None:
        low, high = float(pooled.min()), float(pooled.max())
        taus = np.linspace(low, high if high > low else low + 1.0, 81)
    taus = np.asarray(taus, float)

    def profile(*tasks):
        return np.mean([(np.asarray(t).reshape(-1, 1) > taus).mean(0) for t in tasks], axis=0)

    out = {}
    for a in aggs:
        key = f"{a.label} ({a.kind})" if len({x.kind for x in aggs}) > 1 else a.label
        point = profile(*a.scores)
        if max(a.runs) > 1:
            [(_, ci)] = interval({key: [np.ravel(s) for s in a.scores]}, profile, min(reps, 2000), seed).values()
        else:
            ci = np.stack([point, point])
        out[key] = (point, ci)
    return taus, out
