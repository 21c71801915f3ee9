"""Throughput of whole training runs (start-up and tests included), as the issue measures epymarl.

    python bench/throughput.py                      # QMIX, LBF 8x8-2p-2f-coop, episode + parallel(8), 6 runs each
    python bench/throughput.py --repeats 2 --runners episode
    python bench/throughput.py --config qllm --runners episode     # another alg on the same task

Writes results/bench/throughput.{json,md}: env steps/s (whole process), peak RSS of the main
process, the learner's updates/s and the final test return, per run and as medians.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = ["--config=qmix", "--env-config=lbf", "with", "env_args.key=lbforaging:Foraging-8x8-2p-2f-coop-v3",
        "env_args.time_limit=50", "t_max=20000", "test_interval=10000", "test_nepisode=10",
        # epymarl's defaults, so both sides do the same work
        "use_tensorboard=False", "save_model=False"]
RUNNERS = {"episode": ["runner=episode", "batch_size_run=1"],
           "parallel": ["runner=parallel", "batch_size_run=8"]}


def one_run(runner, seed, extra, alg="qmix"):
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(ROOT, "src", "main.py"), f"--config={alg}", *TASK[1:], *RUNNERS[runner],
               f"seed={seed}", f"local_results_path={tmp}", *extra]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stderr = proc.stderr.read()
        if status != 0:
            raise RuntimeError(f"run failed:\n{stderr[-3000:]}")
        (run,) = glob.glob(os.path.join(tmp, "sacred", "*", "*", "[0-9]*"))
        info = json.load(open(os.path.join(run, "info.json")))
        # the env steps the run made, from its closing line: the logged series end at the last log interval, which
        # may be ~10k steps before the end (a parallel run whose last batches fell short of the next log)
        finished = re.search(r"Finished training: (\d+) env steps", open(os.path.join(run, "cout.txt")).read())
        if finished is None:
            raise RuntimeError(f"{run}/cout.txt has no 'Finished training' line")
    t_env = int(finished.group(1))
    return {"runner": runner, "seed": seed, "wall_s": wall, "t_env": t_env, "env_steps_per_s": t_env / wall,
            "peak_rss_mb": usage.ru_maxrss / 1024, "updates_per_s": info.get("updates_per_s", [None])[-1],
            "final_test_return": info["test_return_mean"][-1]}


def summarise(rows):
    out = {}
    for runner in sorted({r["runner"] for r in rows}):
        rs = [r for r in rows if r["runner"] == runner]
        sps = [r["env_steps_per_s"] for r in rs]
        out[runner] = {"runs": len(rs), "median_env_steps_per_s": statistics.median(sps), "min": min(sps),
                       "max": max(sps), "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
                       "median_updates_per_s": statistics.median(r["updates_per_s"] or 0 for r in rs),
                       "mean_final_test_return": statistics.mean(r["final_test_return"] for r in rs)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--runners", nargs="+", default=["episode", "parallel"], choices=sorted(RUNNERS))
    parser.add_argument("--config", default="qmix", help="the algorithm config (the task stays the same)")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    parser.add_argument("extra", nargs="*", help="more `key=value` overrides for every run")
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        for runner in args.runners:  # interleaved, so machine load affects both alike
            rows.append(one_run(runner, seed=i, extra=args.extra, alg=args.config))
            print(json.dumps(rows[-1]), flush=True)
    summary = summarise(rows)
    lines = ["| runner | runs | env steps/s median (min–max) | peak RSS MB | updates/s | final test return |",
             "|---|---|---|---|---|---|"]
    for runner, s in summary.items():
        lines.append(f"| {runner} | {s['runs']} | {s['median_env_steps_per_s']:.0f} ({s['min']:.0f}–{s['max']:.0f}) "
                     f"| {s['median_peak_rss_mb']:.0f} | {s['median_updates_per_s']:.1f} "
                     f"| {s['mean_final_test_return']:.3f} |")
    name = "throughput" if args.config == "qmix" else f"throughput_{args.config}"
    write_report(args.out, name, {"alg": args.config, "task": TASK[1:], "runs": rows, "summary": summary}, lines)


if __name__ == "__main__":
    main()
