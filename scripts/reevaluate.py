"""Evaluate the final models of finished sweeps again, on more episodes than their runs did.

    python scripts/reevaluate.py results/sweeps/<sweep> [results/sweeps/<other> ...] --episodes 256
    python scripts/reevaluate.py results/sweeps/<sweep> --episodes 256 --sampled --out results/bench/reeval

A sweep's table reads each run's last evaluation, often 32 episodes; where returns vary a lot from episode to episode
(MPE spread N = 3: per-episode std 27-54) that leaves a standard error as large as the gaps between methods. For
every COMPLETED trial this runs src/main.py with the trial's own arguments (sweeps.spec.trial_argv) plus evaluate=True,
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

# run/loop.py's log_final_evaluation: "Final evaluation (t_env 10000, 256 greedy episodes): test_return_mean -1.0, ..."
FINAL = re.compile(r"Final evaluation \(\w+ (\d+), (\d+) (greedy|sampled|epsilon-greedy \([^)]*\)) episodes\): "
                   r"test_return_mean (-?[\d.]+|nan), test_return_std ([\d.]+|nan)")


def evaluation_argv(trial, episodes, sampled, results):
    overrides = {**trial["overrides"], "evaluate": True, "test_nepisode": episodes, "test_greedy": not sampled,
                 "local_results_path": results, "use_tensorboard": False, "save_model": False}
    return trial_argv({**trial, "overrides": overrides}, f"reevaluate:{trial['id']}", trial["model_dir"])


def reevaluate(trial, episodes, sampled, results):
    """The trial's final model over `episodes` test episodes: {mean, std, episodes (as run: the runner may round
    them to its batch), policy, step (of the checkpoint loaded)}. RuntimeError with the run's last lines when it
    fails, when it loaded an earlier checkpoint than the trial's last (the final one is missing), or when --sampled
    meets an algorithm whose test policy is not sampled (epsilon-greedy learners ignore test_greedy)."""
    cmd = [sys.executable, os.path.join(SRC_DIR, "main.py"), *evaluation_argv(trial, episodes, sampled, results)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    hit = FINAL.search(text)
    if proc.returncode or not hit:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError(f"the evaluation of {trial['id']} failed (exit {proc.returncode}):\n{tail}")
    step, policy = int(hit.group(1)), hit.group(3)
    if trial.get("t_env") is not None and step < int(trial["t_env"]):
        raise RuntimeError(f"the evaluation of {trial['id']} loaded the checkpoint of step {step}, but the trial ended "
                           f"at {trial['t_env']}: its final checkpoint in {trial['model_dir']} is missing")
    if sampled and policy != "sampled":
        raise RuntimeError(f"{trial['id']} ({trial['alg']}) tests with a {policy} policy, which test_greedy does not "
                           f"change: drop --sampled for this sweep")
    return {"mean": float(hit.group(4)), "std": float(hit.group(5)), "episodes": int(hit.group(2)), "policy": policy,
            "step": step}


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
            got = reevaluate(t, args.episodes, args.sampled, os.path.join(out, "results"))
            rows.append({"sweep": manifest["name"], "trial": t["id"], "alg": t["alg"], "seed": t["seed"], **got,
                         "se": got["std"] / got["episodes"] ** 0.5, "model_dir": t["model_dir"]})
            print(f"  {t['id']}: test_return_mean {got['mean']:.2f} (std {got['std']:.2f}, se {rows[-1]['se']:.2f}, "
                  f"{got['episodes']} {got['policy']} episodes, step {got['step']})", flush=True)
            write(out, rows, args)  # after every trial: a later failure keeps the rows done
    write(out, rows, args)
    print(f"wrote {os.path.join(out, 'reevaluate.json')} and reevaluate.md", flush=True)
    return 0


def write(out, rows, args):
    os.makedirs(out, exist_ok=True)
    write_json_atomic(os.path.join(out, "reevaluate.json"), rows)
    lines = [f"Final models evaluated again (`python scripts/reevaluate.py {' '.join(args.sweeps)} --episodes "
             f"{args.episodes}{' --sampled' if args.sampled else ''}`).", "",
             "| sweep | trial | seed | step | episodes | policy | test_return_mean | std | standard error |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r['sweep']} | {r['trial']} | {r['seed']} | {r['step']} | {r['episodes']} | {r['policy']} | "
              f"{r['mean']:.2f} | {r['std']:.2f} | {r['se']:.2f} |" for r in rows]
    write_text_atomic(os.path.join(out, "reevaluate.md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
