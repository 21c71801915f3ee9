"""Learning curves (mean ± std over seeds) and a final-score table from Sacred results.

    python scripts/plot.py                                   # results/sacred -> results/plots/test_return_mean.png
    python scripts/plot.py results/sacred --metric return_mean --out curves.png

Runs are grouped by algorithm and env (results/sacred/<alg>/<env>/<run id>/); only completed or
running runs with the metric are used. Each run's curve is interpolated onto a common grid of env
steps before averaging, so runs logged at slightly different t_env still line up.
"""
import argparse
import glob
import json
import os
from collections import defaultdict

import _bootstrap  # noqa: F401 (src/ on sys.path)
import numpy as np

from utils.paths import RESULTS_ROOT


def load_runs(sacred_root, metric):
    """{(alg, env): [(T array, value array), ...]} for every run that logged `metric`."""
    groups = defaultdict(list)
    for info_path in glob.glob(os.path.join(sacred_root, "*", "*", "*", "info.json")):
        run_dir = os.path.dirname(info_path)
        try:
            info = json.load(open(info_path))
        except (json.JSONDecodeError, OSError):
            continue  # a run that is being written
        if metric not in info or f"{metric}_T" not in info or not info[metric]:
            continue
        env = os.path.basename(os.path.dirname(run_dir))
        alg = os.path.basename(os.path.dirname(os.path.dirname(run_dir)))
        groups[(alg, env)].append((np.asarray(info[f"{metric}_T"], float), np.asarray(info[metric], float)))
    return groups


def aggregate(runs, points=100):
    """Mean and std over runs on a shared grid up to the shortest run's last step."""
    end = min(t[-1] for t, _ in runs)
    start = max(t[0] for t, _ in runs)
    grid = np.linspace(start, end, points) if end > start else np.array([end])
    curves = np.stack([np.interp(grid, t, v) for t, v in runs])
    return grid, curves.mean(0), curves.std(0)


def score_table(groups, metric):
    lines = [f"| alg | env | seeds | final {metric} (mean ± std) |", "|---|---|---|---|"]
    for (alg, env), runs in sorted(groups.items()):
        finals = np.array([v[-1] for _, v in runs])
        lines.append(f"| {alg} | {env} | {len(runs)} | {finals.mean():.3f} ± {finals.std():.3f} |")
    return "\n".join(lines)


def plot(groups, metric, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({env for _, env in groups})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for (alg, e), runs in sorted(groups.items()):
            if e != env:
                continue
            grid, mean, std = aggregate(runs)
            ax.plot(grid, mean, label=f"{alg} ({len(runs)})")
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sacred_root", nargs="?", default=os.path.join(RESULTS_ROOT, "sacred"))
    parser.add_argument("--metric", default="test_return_mean")
    parser.add_argument("--out", default=None, help="image path (default results/plots/<metric>.png)")
    args = parser.parse_args(argv)
    groups = load_runs(args.sacred_root, args.metric)
    if not groups:
        raise SystemExit(f"no runs with '{args.metric}' under {args.sacred_root}")
    out = args.out or os.path.join(RESULTS_ROOT, "plots", f"{args.metric}.png")
    plot(groups, args.metric, out)
    print(score_table(groups, args.metric))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
