"""Learning curves of QLLM vs learned mixers, several seeds in parallel processes.

    python bench/learning_curves.py --suite qllm --jobs 6           # the README's comparison
    python bench/learning_curves.py --suite qllm --t-max 100000      # shorter

Suite `qllm`: QMIX vs QLLM (shipped reference TFCAF) on LBF 8x8-2p-2f-coop, and on the climbing
game QLLM with the IGM gate on vs off plus QMIX and VDN. Each run is a normal `src/main.py` job;
the greedy test returns (info.json) are collected into results/bench/learning_curves.{json,md}.
Each run keeps its Sacred folder under <out>/runs/.
"""
import argparse
import concurrent.futures as cf
import glob
import json
import os
import statistics
import subprocess
import sys
import time

from report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUITES = {
    "qllm": [
        # (label, alg, env config, overrides)
        ("qmix", "qmix", "lbf_8x8_2p_2f_coop", []),
        ("qllm", "qllm", "lbf_8x8_2p_2f_coop", []),
        ("qmix", "qmix", "climbing", []),
        ("vdn", "vdn", "climbing", []),
        ("qllm gate on", "qllm", "climbing", ["igm_gate=True"]),
        ("qllm gate off", "qllm", "climbing", ["igm_gate=False"]),
    ],
}
T_MAX = {"lbf_8x8_2p_2f_coop": 400000, "climbing": 20000}


def one_run(label, alg, env, overrides, seed, t_max, out):
    results = os.path.join(out, "runs", f"{alg}_{env}_{label.replace(' ', '_')}_s{seed}")
    interval = max(t_max // 20, 1000)
    cmd = [sys.executable, os.path.join(ROOT, "src", "main.py"), f"--config={alg}", f"--env-config={env}", "with",
           f"seed={seed}", f"t_max={t_max}", f"test_interval={interval}", f"log_interval={interval}",
           f"runner_log_interval={interval}", f"learner_log_interval={interval}", "save_model=False",
           "use_tensorboard=False", f"local_results_path={results}", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"label": label, "env": env, "seed": seed, "error": proc.stderr[-2000:]}
    (info_path,) = glob.glob(os.path.join(results, "sacred", "*", "*", "*", "info.json"))
    info = json.load(open(info_path))
    return {"label": label, "env": env, "seed": seed, "wall_s": round(time.perf_counter() - start, 1),
            "t": info["test_return_mean_T"], "test_return": info["test_return_mean"]}


def summarise(runs):
    rows = {}
    for r in runs:
        if "error" in r:
            continue
        key = (r["env"], r["label"])
        rows.setdefault(key, []).append(r)
    lines = ["| env | method | seeds | final test return (mean ± std) | per seed | best (mean over seeds) |",
             "|---|---|---|---|---|---|"]
    for (env, label), rs in sorted(rows.items()):
        finals = [r["test_return"][-1] for r in rs]
        best = [max(r["test_return"]) for r in rs]
        std = statistics.stdev(finals) if len(finals) > 1 else 0.0
        lines.append(f"| {env} | {label} | {len(rs)} | {statistics.mean(finals):.3f} ± {std:.3f} | "
                     f"{', '.join(f'{f:.2f}' for f in finals)} | {statistics.mean(best):.3f} |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="qllm", choices=sorted(SUITES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--t-max", type=int, default=None, help="override every run's t_max")
    p.add_argument("--envs", nargs="*", default=None, help="only these env configs of the suite")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    a = p.parse_args()
    jobs = [(label, alg, env, ov, seed, a.t_max or T_MAX.get(env, 100000), a.out)
            for label, alg, env, ov in SUITES[a.suite] for seed in range(1, a.seeds + 1)
            if a.envs is None or env in a.envs]
    runs = []
    with cf.ThreadPoolExecutor(a.jobs) as pool:
        for r in pool.map(lambda j: one_run(*j), jobs):
            runs.append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("t", "test_return")}), flush=True)
    write_report(a.out, "learning_curves", runs, summarise(runs))


if __name__ == "__main__":
    main()
