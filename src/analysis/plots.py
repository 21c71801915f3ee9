"""Paper figures (PNG and PDF, matplotlib's Agg backend): learning curves, final-score interval charts and
performance profiles."""
import os

import numpy as np

from utils.runs import TRAINING_KINDS, aggregate, curves

FORMATS = ("png", "pdf")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_dir, stem):
    """<out_dir>/<stem>.png and .pdf; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = os.path.join(out_dir, f"{stem}.{ext}")
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    _pyplot().close(fig)
    return paths


def colours(labels):
    plt = _pyplot()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(sorted(set(labels)))}


def curve_band(runs, band, reps, seed):
    """(grid, mean, low, high, n): mean over runs with ± std or a percentile-bootstrap 95% CI (rliable, per point)."""
    grid, mean, std, n = aggregate(runs)
    if band == "ci" and n.max() > 1:
        from analysis.stats import mean_ci

        _, values = curves(runs)
        low, high = mean.copy(), mean.copy()
        for j in range(len(grid)):
            col = values[:, j][~np.isnan(values[:, j])]
            if len(col) > 1:
                low[j], high[j] = mean_ci(col, reps, seed)
        return grid, mean, low, high, n
    return grid, mean, mean - std, mean + std, n


def band_text(band, ns):
    """What a band is, for a figure's title; a CI band over few runs says that it undercovers."""
    if band == "std":
        return "mean ± std over runs"
    from analysis.stats import SMALL_N, coverage_text

    text = "mean and percentile-bootstrap 95% CI of the mean over runs"
    if any(1 < n < SMALL_N for n in ns):  # the note in full is scores.md's
        text += f"\n(under {SMALL_N} runs such intervals undercover: about {coverage_text()})"
    return text


def learning_curves(groups, metric, out_dir, band="std", reps=500, seed=0, stem="curves"):
    """One panel per env (online panels first, then offline ones with gradient steps on x); per group the mean
    over runs with a band (± std, or the percentile-bootstrap 95% CI of the mean), the legend says how many runs
    each curve averages (n=a–b where runs of different length end at different steps)."""
    plt = _pyplot()
    panels = sorted({(g.kind, g.env) for g in groups}, key=lambda p: (p[0] != "online", p[1]))
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    colour = colours(g.label for g in groups)
    for ax, (kind, env) in zip(axes.flat, panels):
        for g in groups:
            if (g.kind, g.env) != (kind, env):
                continue
            grid, mean, low, high, n = curve_band(g.runs, band, reps, seed)
            counts = f"n={n.max()}" if n.min() == n.max() else f"n={n.min()}–{n.max()}"
            running = f", {g.n_running} running" if g.n_running else ""
            c = colour[g.label]
            ax.plot(grid, mean, color=c, marker="." if len(grid) < 3 else None, label=f"{g.label} ({counts}{running})")
            if n.max() > 1:
                ax.fill_between(grid, low, high, alpha=0.2, color=c, linewidth=0)
            for i in range(1, len(n)):  # where the number of runs averaged changes
                if n[i] != n[i - 1]:
                    ax.annotate(f"n={n[i]}", (grid[i], mean[i]), fontsize=7, color=c, xytext=(2, 4),
                                textcoords="offset points")
        ax.set_title(env if kind == "online" else f"{env} (offline)")
        ax.set_xlabel(TRAINING_KINDS[kind])
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{metric}: {band_text(band, [len(g.runs) for g in groups])}", fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, stem)


def interval_chart(aggs, what, out_dir, stem="scores"):
    """rliable-style interval estimates: per algorithm the IQM and the mean across tasks with 95% stratified
    bootstrap CIs (a bar is the CI, a tick the point estimate)."""
    plt = _pyplot()
    labels = [a.label if len({x.kind for x in aggs}) == 1 else f"{a.label} ({a.kind})" for a in aggs]
    colour = colours(labels)
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.45 * len(aggs) + 1.4), squeeze=False, sharey=True)
    for ax, (title, point, ci) in zip(axes[0], (("IQM", "iqm", "iqm_ci"), ("Mean", "mean", "mean_ci"))):
        for i, (a, label) in enumerate(zip(aggs, labels)):
            value, bounds = getattr(a, point), getattr(a, ci)
            if bounds is not None:
                ax.barh(i, bounds[1] - bounds[0], left=bounds[0], height=0.6, color=colour[label], alpha=0.75)
            ax.vlines(value, i - 0.35, i + 0.35, color="black", linewidth=1.5)
        ax.set_yticks(range(len(aggs)), labels)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(what)
        ax.grid(axis="x", alpha=0.3)
    tasks = sorted({t for a in aggs for t in a.tasks})
    fig.suptitle(f"Final {what} over {len(tasks)} task(s) ({', '.join(tasks)}): point estimate and 95% CI "
                 "(stratified bootstrap)", fontsize=9)
    fig.tight_layout()
    return save(fig, out_dir, stem)


def performance_profile(taus, profiles, what, out_dir, stem="profile"):
    """Performance profiles: the fraction of runs with a final score above tau, with 95% bootstrap bands."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    colour = colours(profiles)
    for label, (point, ci) in sorted(profiles.items()):
        ax.plot(taus, point, color=colour[label], label=label)
        ax.fill_between(taus, ci[0], ci[1], color=colour[label], alpha=0.2, linewidth=0)
    ax.set_xlabel(f"{what} τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Performance profile (95% stratified bootstrap bands)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, stem)
