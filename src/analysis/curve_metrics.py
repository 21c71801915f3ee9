"""Learning-curve metrics of one run and of a group of seeds: steps to a threshold and the area under the curve.

A curve is (T, values): env steps [k] (ascending) and the metric at them [k], e.g. test_success_mean at each
evaluation. `steps_to_threshold` is the first evaluation at or above the threshold (None: not reached);
`auc` is the trapezoid area from step 0 to the budget divided by the budget, so a run at 1.0 from the start scores
1.0 and a run that learns late scores less (the first value holds before the first point, the last value after the
last point: pymarl's last test comes up to one interval before t_max). Callers score finished runs only.
"""
from dataclasses import dataclass

import numpy as np


def _curve(T, values):
    T, values = np.asarray(T, float).reshape(-1), np.asarray(values, float).reshape(-1)
    if len(T) != len(values) or not len(T):
        raise ValueError(f"a curve needs as many steps as values, at least one: got {len(T)} steps, "
                         f"{len(values)} values")
    order = np.argsort(T, kind="stable")
    return T[order], values[order]


def steps_to_threshold(T, values, threshold):
    """The env step of the first point with value >= threshold, or None when no point reaches it."""
    T, values = _curve(T, values)
    hit = np.flatnonzero(values >= threshold)
    return float(T[hit[0]]) if len(hit) else None


def auc(T, values, budget):
    """Area under the curve over [0, budget] divided by budget (the curve's mean over the budget's steps). Points
    past the budget are cut off there (interpolated); before the first point the first value holds, after the last
    point (short of the budget) the last value holds, as a step function would."""
    if not budget or budget <= 0:
        raise ValueError(f"auc needs a positive budget (env steps), got {budget!r}")
    T, values = _curve(T, values)
    inside = T < budget
    xs = np.concatenate([[0.0], T[inside]])
    ys = np.concatenate([[values[0]], values[inside]])
    # cut at the budget, or the last value held to it
    xs, ys = np.append(xs, budget), np.append(ys, np.interp(budget, T, values))
    return float(np.trapezoid(ys, xs) / budget) if hasattr(np, "trapezoid") else float(np.trapz(ys, xs) / budget)


@dataclass
class ThresholdSummary:
    """Steps to a threshold over seeds: `steps` [n] (NaN where not reached)."""
    threshold: float
    steps: np.ndarray

    @property
    def n(self):
        return len(self.steps)

    @property
    def reached(self):
        return int(np.sum(~np.isnan(self.steps)))

    @property
    def mean(self):
        return float(np.nanmean(self.steps)) if self.reached else None

    @property
    def std(self):
        return float(np.nanstd(self.steps)) if self.reached else None

    def cell(self):
        """`12500 ± 3000 (3/3)`; `not reached (0/3)`: mean ± std over the seeds that reached it, and how many did."""
        if not self.reached:
            return f"not reached (0/{self.n})"
        spread = f" ± {self.std:.0f}" if self.reached > 1 else ""
        return f"{self.mean:.0f}{spread} ({self.reached}/{self.n})"

    def as_dict(self):
        return {"threshold": self.threshold, "mean": self.mean, "std": self.std, "reached": self.reached,
                "n": self.n, "steps": [None if np.isnan(s) else float(s) for s in self.steps]}


def threshold_summary(curves, threshold):
    """ThresholdSummary of [(T, values)] (one curve per seed)."""
    steps = [steps_to_threshold(T, v, threshold) for T, v in curves]
    return ThresholdSummary(float(threshold), np.array([np.nan if s is None else s for s in steps], float))


def parse_thresholds(text):
    """`0.9` (every env) or `two_switch=0.9,pistonball=0.8[,default=0.9]` -> {env or None: threshold}."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        env, sep, value = part.rpartition("=")
        try:
            out[(env.strip() or None) if sep else None] = float(value)
        except ValueError:
            raise ValueError(f"threshold '{part}' is not a number or ENV=NUMBER (e.g. 0.9 or pistonball=0.8)") from None
    out = {None if k == "default" else k: v for k, v in out.items()}
    if not out:
        raise ValueError("no threshold given: write 0.9 or ENV=0.9,ENV=0.8")
    return out


def threshold_for(thresholds, env):
    """The threshold of an env from parse_thresholds' mapping (its own, else the default), or None."""
    return thresholds.get(env, thresholds.get(None))
