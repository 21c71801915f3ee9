"""Learning curves (mean ± std over seeds, with the number of runs at each point) and a final-score table: the
quick form of `python src/results.py`, which adds bootstrap CIs, IQM across tasks, normalised scores, interval
charts, performance profiles, CSV and marl-eval JSON, --by and MongoDB. Both use the same library (utils/runs.py for
which runs and groups, src/analysis for reading them and for the figures), so both read a Sacred root, a name or run
folder under it, and a sweep folder (its manifest).

    python scripts/plot.py                   # results/sacred -> results/plots/test_return_mean.png (and .pdf)
    python scripts/plot.py results/sacred --metric return_mean --out curves.png
    python scripts/plot.py --ignore lr                       # runs that differ only in lr become seeds of one group

Which runs and how they are grouped (utils/runs.py): training runs that COMPLETED or are RUNNING (marked
"running"); evaluate, collection and generation runs, failed ones and those whose process died are skipped and
counted. Seeds of one group share name, env and every config key but the seed and the bookkeeping keys
(utils/runs.py IGNORED: outputs, logging cadence, t_max, machine, ...); the label shows the keys that differ,
e.g. `qllm tfcaf=my_tfcaf.py`; `with name=...` labels a group explicitly. Curves span every run of a group (a short
run does not cut them; where fewer runs reach a point the legend and a mark say n); a one-run group has no band
and says n=1. Offline runs (x = gradient steps) get panels of their own. A resumed run (checkpoint_path=) is one run
with the segments it continues, its curve chained in step order (said below the table).
"""
import argparse
import os

import _bootstrap  # noqa: F401 (src/ on sys.path)

from analysis.report import nonfinite_note, repeated_seeds_note, skipped_summary, unscored_counts
from analysis.sources import load, metric_hint
from utils.paths import RESULTS_ROOT
from utils.runs import TRAINING_KINDS, chained_note, changed_note, format_score, group_runs, nonfinite_runs


def score_table(groups, metric):
    """Final scores of the finished runs; a RUNNING run's last evaluation is not its final one: it is counted
    ("+1 running") and drawn, not scored; a finished run with a NaN or inf final is counted ("+1 non-finite")."""
    lines = [f"| group | env | x | runs | final {metric} | at step |", "|---|---|---|---:|---|---|"]
    for g in groups:
        done = g.finished
        steps = sorted({int(r.T[-1]) for r in done})
        at = "–" if not steps else f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
        lines.append(f"| {g.label} | {g.env} | {TRAINING_KINDS[g.kind]} | {len(done)}{unscored_counts(g)} | "
                     f"{format_score([r.final for r in done]) if done else '–'} | {at} |")
    return "\n".join(lines)


def out_files(out, metric):
    """(folder, stem) of --out: a folder (existing, or a path ending in a separator) gets <metric>.png and .pdf
    inside it; anything else is a stem: `curves`, `curves.png` or `curves.pdf` give curves.png and curves.pdf."""
    if out.endswith(("/", os.sep)) or os.path.isdir(out):
        return os.path.abspath(out), metric
    stem, ext = os.path.splitext(os.path.basename(out))
    if ext.lower() not in (".png", ".pdf"):
        stem = os.path.basename(out)
    return os.path.dirname(os.path.abspath(out)), stem


def plot(groups, metric, out):
    """The learning curves of src/results.py (analysis.plots) as <stem>.png and .pdf (out_files); returns the paths
    written."""
    from analysis.plots import learning_curves

    folder, stem = out_files(out, metric)
    return learning_curves(groups, metric, folder, stem=stem)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sacred_root", nargs="?", default=os.path.join(RESULTS_ROOT, "sacred"),
                        help="a Sacred root, a name or run folder under it, or a sweep folder (default results/sacred)")
    parser.add_argument("--metric", default="test_return_mean")
    parser.add_argument("--out", default=None, help="image path, written as .png and .pdf (default "
                                                    "results/plots/<metric>.png; a folder, or a path ending in /: "
                                                    "<folder>/<metric>.png and .pdf)")
    parser.add_argument("--ignore", nargs="*", default=[], metavar="KEY",
                        help="more config keys (dotted: env_args.time_limit) that do not split groups")
    args = parser.parse_args(argv)
    if not os.path.exists(args.sacred_root):
        raise SystemExit(f"{args.sacred_root} does not exist: give results/sacred, a run folder or a sweep folder")
    runs, skipped = load([args.sacred_root], args.metric)
    if not runs:
        raise SystemExit(f"no runs with '{args.metric}' under {args.sacred_root}"
                         + (f" ({skipped_summary(skipped)})" if skipped else "") + metric_hint(args.metric, skipped))
    groups = group_runs(runs, ignore=set(args.ignore), nonfinite=nonfinite_runs(skipped))
    out = args.out or os.path.join(RESULTS_ROOT, "plots", f"{args.metric}.png")
    files = plot(groups, args.metric, out)
    print(score_table(groups, args.metric))
    for note in (chained_note(runs), changed_note(runs), repeated_seeds_note(groups),
                 nonfinite_note(skipped, args.metric), skipped_summary(skipped)):
        if note:
            print("\n" + note)
    print("\nwrote " + ", ".join(files))


if __name__ == "__main__":
    main()
