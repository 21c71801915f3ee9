"""What Ray Tune costs a sweep: N short CPU-bound trials run one after another as plain processes vs through a sweep
with 2 concurrent trials (local Ray, 2 CPUs).

    python bench/sweep_overhead.py                      # 8 trials of QMIX on the matrix game, t_max=16000 each
    python bench/sweep_overhead.py --t-max 160000       # ~52 s trials (idle 2-core machine): the README's 1.90x
    python bench/sweep_overhead.py --trials 8 --t-max 4000     # ~2 s trials: Ray's start weighs more

Trial length on the idle 2-core machine: about 0.33 ms per env step (t_max 16000: ~6 s; 32000: ~12 s).

Reports the speed-up (sequential wall time / sweep wall time, Ray's start included; target >= 1.8x on 2 cores),
Ray's fixed overhead per sweep (starting Ray, checking the trials, writing the manifest: the sweep's wall time outside
Tuner.fit) and per trial (2 x Tuner.fit's wall time - the trials' own process time, over the trials: actor start,
scheduling and reporting), and the latter as a share of a 60 s trial. The trials' process times also show what running
two at once costs each (shared memory bandwidth, other load); so does the reference: the same commands 2 at once as
plain processes, without Ray. Writes results/bench/sweep_overhead.{json,md}.
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from sweeps import driver  # noqa: E402
from sweeps.spec import expand, inline_sweep, validate  # noqa: E402
from sweeps.trial import trial_command  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--t-max", type=int, default=16000)  # a trial of ~6 s on an idle core
    p.add_argument("--alg", default="qmix")
    p.add_argument("--env", default="matrix_game")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="sweep_overhead_")
    updates = [f"t_max={a.t_max}", "test_interval=1000", "log_interval=1000", "save_model_interval=100000",
               "test_nepisode=8", "use_tensorboard=False", f"local_results_path={tmp}"]
    try:
        # sequential: the trials' own commands, one after another
        spec = inline_sweep([a.alg], [a.env], a.trials, [], updates, name="sequential")
        seq_walls = []
        for t in validate(expand(spec)):
            cmd = trial_command({**t, "label": f"bench:sequential:{t['index']}"})
            start = time.time()
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seq_walls.append(time.time() - start)
        seq = sum(seq_walls)

        # reference: the same commands, 2 at once as plain processes (what the machine gives 2 runs right now)
        start = time.time()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda t: subprocess.run(trial_command({**t, "label": f"bench:parallel:{t['index']}"}),
                                                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL), validate(expand(spec))))
        plain2 = time.time() - start

        # the same trials as a sweep: 2 at once on a local Ray with 2 CPUs
        start = time.time()
        driver.start_ray(num_cpus=2)
        ray_init = time.time() - start
        sweep = driver.prepare(inline_sweep([a.alg], [a.env], a.trials, [], updates, name="overhead"))
        fit_start = time.time()
        code = driver.run(sweep, max_concurrent=2, stream=open(os.devnull, "w"))
        fit = time.time() - fit_start
        total = time.time() - start
        if code != 0:
            raise SystemExit(f"the sweep failed: {[r['error'] for r in sweep.records if r.get('error')]}")
        runs = [r["run_s"] for r in sweep.records]
        per_trial = max(0.0, 2 * fit - sum(runs)) / a.trials
        fixed = total - fit
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data = {"trials": a.trials, "alg": a.alg, "env": a.env, "t_max": a.t_max, "cpus": os.cpu_count(),
            "machine": platform.node(), "sequential_s": seq, "sequential_trial_s": seq_walls,
            "plain_parallel_s": plain2, "sweep_s": total,
            "ray_init_s": ray_init, "fit_s": fit, "sweep_trial_run_s": runs, "speedup": seq / total,
            "fixed_overhead_s": fixed, "per_trial_overhead_s": per_trial,
            "per_trial_overhead_share_of_60s": (per_trial + fixed / a.trials) / 60}
    lines = [f"Sweep overhead: {a.trials} trials of {a.alg} on {a.env} (t_max={a.t_max}), {os.cpu_count()} CPUs, "
             f"{platform.node()}", "",
             "| measure | value |", "|---|---:|",
             f"| sequential, plain processes | {seq:.1f} s (trial {statistics.mean(seq_walls):.1f} s) |",
             f"| sweep, 2 at once (Ray start included) | {total:.1f} s (trial process {statistics.mean(runs):.1f} s) |",
             f"| speed-up | {seq / total:.2f}x |",
             f"| reference: 2 plain processes at once, no Ray | {plain2:.1f} s ({seq / plain2:.2f}x) |",
             f"| Ray start | {ray_init:.1f} s |",
             f"| fixed overhead per sweep (outside Tuner.fit) | {fixed:.1f} s |",
             f"| overhead per trial (scheduling, actor start, reporting) | {per_trial:.2f} s |",
             f"| overhead of a 60 s trial (per trial + fixed / trials) | "
             f"{100 * data['per_trial_overhead_share_of_60s']:.1f}% |"]
    write_report(a.out, "sweep_overhead", data, lines)


if __name__ == "__main__":
    main()
