"""Evaluate the final models of finished sweeps again, on more episodes than their runs did.

    python scripts/reevaluate.py results/sweeps/<sweep> [results/sweeps/<other> ...] --episodes 256
    python scripts/reevaluate.py results/sweeps/<sweep> --episodes 256 --sampled --out results/bench/reeval --jobs 2
    python src/results.py results/sweeps/<sweep> --finals results/bench/reevaluate/reevaluate.json

For every COMPLETED trial: src/main.py with the trial's own arguments plus evaluate=True, its final checkpoint and
test_nepisode=--episodes, its Sacred runs in <out>/results (src/sweeps/reevaluate.py says why and how). Writes
<out>/reevaluate.json and reevaluate.md: per trial the mean, std and standard error of test_return_mean (the json
also every other test stat of the evaluation, e.g. SMAX's win rate); a trial already evaluated there with the same
request is kept. src/results.py --finals <out>/reevaluate.json puts these
numbers in place of each run's last evaluation in its tables.
"""
import argparse
import os
import sys

import _bootstrap  # noqa: F401 (src/ on sys.path)

from sweeps.reevaluate import reevaluate_sweeps
from utils.paths import REPO_ROOT


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", help="sweep folders (results/sweeps/<name>) whose trials finished")
    parser.add_argument("--episodes", type=int, default=256, help="test episodes per trial (default 256)")
    parser.add_argument("--sampled", action="store_true", help="sample actions from the policy (test_greedy=False)")
    parser.add_argument("--out", default=None, help="output folder (default results/bench/reevaluate)")
    parser.add_argument("--jobs", type=int, default=1, help="evaluations at a time (default 1)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    out = os.path.abspath(args.out or os.path.join(REPO_ROOT, "results", "bench", "reevaluate"))
    try:
        rows = reevaluate_sweeps(args.sweeps, args.episodes, out, sampled=args.sampled, jobs=args.jobs,
                                 log=lambda line: print(line, flush=True))
    except ValueError as e:
        parser.error(str(e))
    except RuntimeError as e:  # evaluations that failed; the rows of the others are written
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not rows:
        print(f"error: no finished trial to evaluate in {', '.join(args.sweeps)}: a trial counts once it COMPLETED "
              f"with a model folder (save_model) and played test episodes; finish the sweep first (src/sweep.py "
              f"--resume). Rows of other sweeps in {out} are kept.", file=sys.stderr)
        return 1
    print(f"wrote {os.path.join(out, 'reevaluate.json')} and reevaluate.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
