"""marl-eval's raw data layout (instadeepai/marl-eval, the format BenchMARL and Mava export), so results of this
project can be aggregated and plotted next to theirs with marl-eval's own tools:

    {env_name: {task_name: {algorithm_name: {"run_<i>": {"step_<j>": {"step_count": int, metric: [values]},
                                                          ..., "absolute_metrics": {metric: [values]}}}}}}

env_name is the run's env config (`env`: lbf, gymma, matrix_game ...), task_name its env label (the results
folder's <env>: the LBF key, SMAC map, matrix game ...), algorithm_name the group label. This project logs the
mean over the `test_nepisode` evaluation episodes, so each list holds that one value; absolute_metrics is the run's
final evaluation. Metric names follow marl-eval's: test_return_mean -> return, test_battle_won_mean -> win_rate,
others keep their name without test_ and _mean. A NaN or inf value (a diverged evaluation) is written as null:
the file is strict JSON, written atomically (a value that cannot be written leaves the previous file).
"""
import math

from utils.files import write_json_atomic

METRIC_NAMES = {"test_return_mean": "return", "test_battle_won_mean": "win_rate",
                "test_normalised_score": "normalised_score"}


def metric_name(metric):
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    name = metric[len("test_"):] if metric.startswith("test_") else metric
    return name[:-len("_mean")] if name.endswith("_mean") else name


def to_marl_eval(groups, metric):
    name = metric_name(metric)
    out = {}
    for g in groups:
        for run in g.finished:  # marl-eval's absolute_metrics are final scores: a RUNNING run has none yet
            env_name = str(run.config.get("env") or g.env)
            algos = out.setdefault(env_name, {}).setdefault(g.env, {}).setdefault(g.label, {})
            record = {f"step_{j}": {"step_count": int(t), name: [finite_or_none(v)]}
                      for j, (t, v) in enumerate(zip(run.T, run.values))}
            record["absolute_metrics"] = {name: [finite_or_none(run.final)]}
            algos[f"run_{len(algos)}"] = record
    return out


def finite_or_none(value):
    """A logged value for strict JSON: NaN and inf (a diverged evaluation) become null."""
    return float(value) if math.isfinite(value) else None


def write_marl_eval(path, groups, metric):
    write_json_atomic(path, to_marl_eval(groups, metric), fsync=False, allow_nan=False)
    return path
