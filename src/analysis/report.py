"""Markdown and CSV tables of final scores (per group) and aggregates (per algorithm across tasks)."""
import csv
import json
from collections import Counter

import numpy as np

from utils.runs import TRAINING_KINDS, nonfinite_reason

CI_HEAD = "95% CI (percentile bootstrap)"
SHORT_RUNS = 0.9  # a group whose smallest final step is below this share of its largest pools runs of other lengths


def fmt(x, digits=3):
    return f"{x:.{digits}f}"


def fmt_ci(ci, digits=3):
    return "–" if ci is None else f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def fmt_mean_std(values, digits=3):
    """`mean ± std` over runs; one run shows its value with no spread (the n column says n=1)."""
    values = np.asarray(values, float)
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{fmt(values.mean(), digits)} ± {fmt(values.std(), digits)}"


def steps_range(steps):
    steps = sorted({int(s) for s in steps})
    return f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"


def runs_cell(gs):
    g = gs.group
    cell = f"{gs.n}" if gs.n > 1 else "1 (n=1)"
    cell += f" ({gs.rescored} re-evaluated)" if gs.rescored else ""
    return cell + unscored_counts(g)


def unscored_counts(g):
    """The group's runs that a score row does not count: still running, or a finished one with a non-finite final."""
    return "".join(f" (+{n} {what}, not scored)" for n, what in ((g.n_running, "running"),
                                                                  (g.n_nonfinite, "non-finite")) if n)


def unscored_note(groups):
    """The groups whose runs are all still running: drawn, but with no final score yet."""
    pending = [f"{g.label} ({g.env}): {g.n_running}" for g in groups if not g.finished]
    return ("still running, no final score yet (curves drawn): " + "; ".join(pending)) if pending else ""


def group_table(scores, metric, normaliser=None):
    """One row per group: runs (and how many finals are re-evaluations), final score mean ± std over runs (std with
    ddof=0), the percentile-bootstrap 95% CI of the mean, and the normalised score when asked."""
    head = ["group", "env", "x", "runs", f"final {metric} (mean ± std)", CI_HEAD]
    if normaliser is not None:
        head += ["normalised (mean ± std)", f"{CI_HEAD}, normalised"]
    head.append("at step")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h == "runs" else "---" for h in head) + "|"]
    for gs in scores:
        g = gs.group
        row = [g.label, g.env, TRAINING_KINDS[g.kind], runs_cell(gs), fmt_mean_std(gs.finals), fmt_ci(gs.ci)]
        if normaliser is not None:
            row += [fmt_mean_std(gs.normalised), fmt_ci(gs.normalised_ci)]
        row.append(steps_range(gs.steps))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def aggregate_table(aggs, what):
    """One row per algorithm: IQM and mean over its tasks with stratified percentile-bootstrap 95% CIs."""
    lines = [f"| algorithm | x | tasks | runs | IQM of {what} | {CI_HEAD} | mean of {what} | {CI_HEAD} |",
             "|---|---|---|---:|---|---|---|---|"]
    for a in aggs:
        runs = "+".join(str(n) for n in a.runs)
        lines.append(f"| {a.label} | {TRAINING_KINDS[a.kind]} | {', '.join(a.tasks)} | {runs} | {fmt(a.iqm)} | "
                     f"{fmt_ci(a.iqm_ci)} | {fmt(a.mean)} | {fmt_ci(a.mean_ci)} |")
    return "\n".join(lines)


def skipped_summary(skipped):
    if not skipped:
        return ""
    counts = Counter(why for _, why in skipped)
    return f"skipped {len(skipped)} run(s): " + "; ".join(f"{n} × {why}" for why, n in sorted(counts.items()))


def nonfinite_note(skipped, metric):
    """A line naming the finished runs skipped because their final value is NaN or inf ("" if none)."""
    paths = [p for p, why in skipped if why == nonfinite_reason(metric)]
    return (f"runs whose final {metric} is NaN or inf, left out of the scores and curves: "
            + ", ".join(paths)) if paths else ""


def repeated_seeds_note(groups):
    """Groups holding two runs with one seed (a rerun, or the same seed at another run length): they count as two
    runs, but they are not independent seeds."""
    notes = []
    for g in groups:
        seeds = Counter(r.config.get("seed") for r in g.runs)
        repeated = [f"seed {s} × {n}" for s, n in sorted(seeds.items(), key=lambda x: str(x[0])) if n > 1]
        if repeated:
            notes.append(f"{g.label} ({g.env}): {', '.join(repeated)}")
    return ("runs with the same seed in one group (each counted as a run, not an independent seed): "
            + "; ".join(notes)) if notes else ""


def pooled_note(groups):
    notes = [f"{g.label} ({g.env}): {', '.join(g.pooled)}" for g in groups if g.pooled]
    return ("runs pooled as seeds although these keys differ (not in --by): " + "; ".join(notes)) if notes else ""


def lengths_note(groups_steps):
    """A line naming the groups whose runs end at widely different steps ([(label, env, final steps)]): t_max does
    not split groups (a resumed run may extend it), so a short run can be pooled with long ones."""
    wide = [f"{label} ({env}): {steps_range(steps)}" for label, env, steps in groups_steps
            if len(steps) > 1 and min(steps) < SHORT_RUNS * max(steps)]
    return ("runs of different lengths pooled in one group (smallest final step below "
            f"{SHORT_RUNS:.0%} of the largest; their finals are not at one step): " + "; ".join(wide)) if wide else ""


def write_group_csv(path, scores, metric):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        # runs: the finished runs scored; running: those not scored yet; non_finite: finished, final NaN or inf, not
        # scored; run_paths: the scored ones
        w.writerow(["group", "name", "env", "kind", "settings", "runs", "running", "non_finite", f"{metric}_mean",
                    f"{metric}_std", "ci_low", "ci_high", "normalised_mean", "normalised_std", "normalised_ci_low",
                    "normalised_ci_high", "step_min", "step_max", "rescored", "run_paths"])
        for gs in scores:
            g = gs.group
            norm = gs.normalised
            w.writerow([g.label, g.name, g.env, g.kind, json.dumps(g.settings, sort_keys=True, default=str), gs.n,
                        g.n_running, g.n_nonfinite, gs.finals.mean(), gs.finals.std() if gs.n > 1 else "",
                        *(gs.ci if gs.ci else ("", "")),
                        norm.mean() if norm is not None else "", norm.std() if norm is not None and gs.n > 1 else "",
                        *(gs.normalised_ci if gs.normalised_ci else ("", "")),
                        int(gs.steps.min()), int(gs.steps.max()), gs.rescored,
                        " ".join(r.path for r in g.finished)])


def write_aggregate_csv(path, aggs):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algorithm", "kind", "tasks", "runs_per_task", "iqm", "iqm_ci_low", "iqm_ci_high", "mean",
                    "mean_ci_low", "mean_ci_high"])
        for a in aggs:
            w.writerow([a.label, a.kind, " ".join(a.tasks), " ".join(map(str, a.runs)), a.iqm,
                        *(a.iqm_ci or ("", "")), a.mean, *(a.mean_ci or ("", ""))])
