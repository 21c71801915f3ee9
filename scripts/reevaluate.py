"""Evaluate the final models of finished sweeps again, on more episodes than their runs did.

    python scripts/reevaluate.py results/sweeps/<sweep> [results/sweeps/<other> ...] --episodes 256
    python scripts/reevaluate.py results/sweeps/<sweep> --episodes 256 --sampled --out results/bench/reeval

A sweep's table reads each run's last evaluation, often 32 episodes; where returns vary a lot from episode to episode
(MPE spread: std 35-50) that leaves a standard error as large as the gaps between methods. For every COMPLETED trial
this runs src/main.py with the trial's own arguments (sweeps.spec.trial_argv) plus evaluate=True,
checkpoint_path=<its model folder>, test_nepisode=--episodes (greedy unless --sampled), with its Sacred runs in a
scratch results folder (<out>/results) so that the sweep's own runs stay as they were. Trials with the same seed meet
the same start states where the env draws them from the seed and its steps are deterministic (MPE spread), so there
methods compare paired.
Writes <out>/reevaluate.json and reevaluate.md: per trial the mean, std and standard error of test_return_mean.
"""
import argparse
import os
import re
import subprocess
import sys

import _bootstrap  # noqa: F401 (src/ on sys.path)

from sweeps.manifest import read_manifest
from sweeps.spec import trial_argv
from utils.files import write_json_atomic, write_text_atomic
from utils.paths import REPO_ROOT, SRC_DIR

FINAL = re.compile(r"Final evaluation \(.*?(\d+) (greedy|sampled) episodes\): test_return_mean (-?[\d.eE+-]+), "
                   r"test_return_std ([\d.eE+-]+)")


def evaluation_argv(trial, episodes, sampled, results):
    overrides = {**trial["overrides"], "evaluate": True, "test_nepisode": episodes, "test_greedy": not sampled,
                 "local_results_path": results, "use_tensorboard": False, "save_model": False}
    return trial_argv({**trial, "overrides": overrides}, f"reevaluate:{trial['id']}", trial["model_dir"])


def reevaluate(trial, episodes, sampled, results):
    """(mean, std) of the trial's final model over `episodes` test episodes; RuntimeError with the run's last lines."""
    cmd = [sys.executable, os.path.join(SRC_DIR, "main.py"), *evaluation_argv(trial, episodes, sampled, results)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    hit = FINAL.search(proc.stdout + proc.stderr)
    if proc.returncode or not hit:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"the evaluation of {trial['id']} failed (exit {proc.returncode}):\n{tail}")
    return float(hit.group(3)), float(hit.group(4))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", help="sweep folders (results/sweeps/<name>) whose trials finished")
    parser.add_argument("--episodes", type=int, default=256, help="test episodes per trial (default 256)")
    parser.add_argument("--sampled", action="store_true", help="sample actions from the policy (test_greedy=False)")
    parser.add_argument("--out", default=None, help="output folder (default results/bench/reevaluate)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    out = os.path.abspath(args.out or os.path.join(REPO_ROOT, "results", "bench", "reevaluate"))
    rows = []
    for folder in args.sweeps:
        manifest = read_manifest(folder)
        if manifest is None:
            parser.error(f"{folder} holds no readable manifest.json: pass a sweep folder (results/sweeps/<name>)")
        done = [t for t in manifest["trials"] if t.get("status") == "COMPLETED" and t.get("model_dir")]
        skipped = len(manifest["trials"]) - len(done)
        print(f"{manifest['name']}: {len(done)} finished trials with a model folder"
              + (f" ({skipped} others skipped)" if skipped else ""), flush=True)
        for t in done:
            mean, std = reevaluate(t, args.episodes, args.sampled, os.path.join(out, "results"))
            rows.append({"sweep": manifest["name"], "trial": t["id"], "alg": t["alg"], "seed": t["seed"],
                         "episodes": args.episodes, "policy": "sampled" if args.sampled else "greedy",
                         "mean": mean, "std": std, "se": std / args.episodes ** 0.5, "model_dir": t["model_dir"]})
            print(f"  {t['id']}: test_return_mean {mean:.2f} (std {std:.2f}, se {rows[-1]['se']:.2f})", flush=True)
    os.makedirs(out, exist_ok=True)
    write_json_atomic(os.path.join(out, "reevaluate.json"), rows)
    lines = [f"Final models evaluated again: {args.episodes} {'sampled' if args.sampled else 'greedy'} episodes each "
             f"(`python scripts/reevaluate.py {' '.join(args.sweeps)} --episodes {args.episodes}"
             f"{' --sampled' if args.sampled else ''}`).", "",
             "| sweep | trial | seed | test_return_mean | std | standard error |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['sweep']} | {r['trial']} | {r['seed']} | {r['mean']:.2f} | {r['std']:.2f} | {r['se']:.2f} |"
              for r in rows]
    write_text_atomic(os.path.join(out, "reevaluate.md"), "\n".join(lines) + "\n")
    print(f"wrote {os.path.join(out, 'reevaluate.json')} and reevaluate.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
