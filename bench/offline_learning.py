"""Offline learners on the reference datasets: final greedy test return per (dataset, learner), over seeds.

    python scripts/reference_datasets.py --envs lbf_8x8_2p_2f_coop     # the datasets first
    python bench/offline_learning.py                                   # LBF 8x8-2p-2f-coop, 5 learners x 2 datasets
    python bench/offline_learning.py --env mpe_spread --datasets expert imbalanced_1e --seeds 1 2 3

Each cell is `src/main.py --config=<alg> --env-config=<env> with offline_dataset=<dataset>` for `--steps`
gradient steps, evaluated every `--steps / 6` steps on `test_nepisode` greedy episodes; a run's score is the
mean of its last two evaluations; cells show mean ± std over seeds, the normalised score
(R - R_low) / (R_high - R_low) with the datasets' own returns as references (low: imbalanced_1e or random,
high: expert_all), and the dataset's mean return for comparison. Writes results/bench/offline_learning_<env>.{json,md}.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from utils.config import build_config  # noqa: E402
from utils.paths import env_label  # noqa: E402


def one_run(env, alg, dataset, seed, steps, extra):
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(ROOT, "src", "main.py"), f"--config={alg}", f"--env-config={env}",
               "with", f"seed={seed}", f"offline_dataset={dataset}", f"offline_steps={steps}",
               f"offline_test_interval={max(1, steps // 6)}", f"offline_log_interval={max(1, steps // 6)}",
               "save_model=False", "use_tensorboard=False", f"local_results_path={tmp}", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        info = json.load(open(glob.glob(os.path.join(tmp, "sacred", "*", "*", "*", "info.json"))[0]))
    returns = info["test_return_mean"]
    return {"alg": alg, "dataset": os.path.basename(dataset)[:-3], "seed": seed,
            "score": statistics.mean(returns[-2:]), "curve": returns,
            "updates_per_s": info.get("updates_per_s", [None])[-1]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="lbf_8x8_2p_2f_coop")
    p.add_argument("--datasets", nargs="+", default=["expert", "mix_200e_1000p"])
    p.add_argument("--algs", nargs="+", default=["bc", "bc50", "bc_beta", "omar", "omiga"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data-dir", default=None, help="default: results/datasets/<env label>")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    p.add_argument("extra", nargs="*", help="more `with` updates for every run, e.g. test_nepisode=16")
    a = p.parse_args()
    label = env_label(build_config("bc", a.env))
    data_dir = a.data_dir or os.path.join(ROOT, "results", "datasets", label)
    dataset_returns = {r["dataset"]: r["return_mean"]
                       for r in json.load(open(os.path.join(data_dir, "returns.json")))["datasets"]}
    low = dataset_returns.get("imbalanced_1e", dataset_returns.get("random"))
    high = dataset_returns.get("expert_all", dataset_returns.get("expert"))
    jobs = [(a.env, alg, os.path.join(data_dir, f"{d}.h5"), seed, a.steps, a.extra)
            for d in a.datasets for alg in a.algs for seed in a.seeds]
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda j: one_run(*j), jobs))

    lines = [f"{label}: final greedy test return (mean of the last 2 of 7 evaluations), mean ± std over seeds "
             f"{a.seeds}, {a.steps} gradient steps of 32 episodes; normalised with low = {low:.3f}, "
             f"high = {high:.3f}", "", "| dataset (mean return) | " + " | ".join(a.algs) + " |",
             "|---|" + "---:|" * len(a.algs)]
    for d in a.datasets:
        cells = []
        for alg in a.algs:
            scores = [r["score"] for r in rows if r["alg"] == alg and r["dataset"] == d]
            mean, std = statistics.mean(scores), statistics.pstdev(scores)
            cells.append(f"{mean:.3f} ± {std:.3f} ({(mean - low) / (high - low):.2f})")
        lines.append(f"| {d} ({dataset_returns.get(d, float('nan')):.3f}) | " + " | ".join(cells) + " |")
    write_report(a.out, f"offline_learning_{a.env}", {"rows": rows, "low": low, "high": high}, lines)


if __name__ == "__main__":
    main()
