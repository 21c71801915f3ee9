"""Learning curves (mean ± std over seeds, with the number of runs at each point) and a final-score table.

    python scripts/plot.py                                   # results/sacred -> results/plots/test_return_mean.png
    python scripts/plot.py results/sacred --metric return_mean --out curves.png
    python scripts/plot.py --ignore lr                       # runs that differ only in lr become seeds of one group

Which runs and how they are grouped (utils/runs.py): training runs that COMPLETED or are RUNNING (marked
"running"); evaluate, collection and generation runs, failed ones and those whose process died are skipped and
counted. Seeds of one group share name, env and every config key but the seed and the bookkeeping keys
(utils/runs.py IGNORED: outputs, logging cadence, t_max, machine, ...); the label shows the keys that differ,
e.g. `qllm tfcaf=my_tfcaf.py`; `with name=...` labels a group explicitly. Curves span every run of a group (a short
run does not cut them; where fewer runs reach a point the legend and a mark say n); a one-run group has no band
and says n=1. Offline runs (x = gradient steps) get panels of their own.
"""
import argparse
import os
from collections import Counter

import _bootstrap  # noqa: F401 (src/ on sys.path)

from utils.paths import RESULTS_ROOT
from utils.runs import TRAINING_KINDS, aggregate, find_runs, format_score, group_runs


def score_table(groups, metric):
    lines = [f"| group | env | x | runs | final {metric} | at step |", "|---|---|---|---:|---|---|"]
    for g in groups:
        finals = [r.values[-1] for r in g.runs]
        steps = sorted({int(r.T[-1]) for r in g.runs})
        at = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
        running = f" ({g.n_running} running)" if g.n_running else ""
        lines.append(f"| {g.label} | {g.env} | {TRAINING_KINDS[g.kind]} | {len(g.runs)}{running} | "
                     f"{format_score(finals)} | {at} |")
    return "\n".join(lines)


def skipped_summary(skipped):
    if not skipped:
        return ""
    counts = Counter(why for _, why in skipped)
    return "skipped: " + "; ".join(f"{n} × {why}" for why, n in sorted(counts.items()))


def plot(groups, metric, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(g.kind, g.env) for g in groups})  # online panels first, then offline ones
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (kind, env) in zip(axes[0], panels):
        for g in groups:
            if (g.kind, g.env) != (kind, env):
                continue
            grid, mean, std, n = aggregate(g.runs)
            counts = f"n={n.max()}" if n.min() == n.max() else f"n={n.min()}–{n.max()}"
            running = f", {g.n_running} running" if g.n_running else ""
            (line,) = ax.plot(grid, mean, marker="." if len(grid) < 3 else None,
                              label=f"{g.label} ({counts}{running})")
            if n.max() > 1:
                ax.fill_between(grid, mean - std, mean + std, alpha=0.2, color=line.get_color())
            for i in range(1, len(n)):  # where the number of runs averaged changes
                if n[i] != n[i - 1]:
                    ax.annotate(f"n={n[i]}", (grid[i], mean[i]), fontsize=7, color=line.get_color(),
                                xytext=(2, 4), textcoords="offset points")
        ax.set_title(env if kind == "online" else f"{env} (offline)")
        ax.set_xlabel(TRAINING_KINDS[kind])
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sacred_root", nargs="?", default=os.path.join(RESULTS_ROOT, "sacred"))
    parser.add_argument("--metric", default="test_return_mean")
    parser.add_argument("--out", default=None, help="image path (default results/plots/<metric>.png)")
    parser.add_argument("--ignore", nargs="*", default=[], metavar="KEY",
                        help="more config keys (dotted: env_args.time_limit) that do not split groups")
    args = parser.parse_args(argv)
    runs, skipped = find_runs(args.sacred_root, args.metric)
    if not runs:
        raise SystemExit(f"no runs with '{args.metric}' under {args.sacred_root}"
                         + (f" ({skipped_summary(skipped)})" if skipped else ""))
    groups = group_runs(runs, ignore=set(args.ignore))
    out = args.out or os.path.join(RESULTS_ROOT, "plots", f"{args.metric}.png")
    plot(groups, args.metric, out)
    print(score_table(groups, args.metric))
    if skipped:
        print("\n" + skipped_summary(skipped))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
