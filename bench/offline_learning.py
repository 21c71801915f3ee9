"""Offline learners on the reference datasets: the datasets, the sweep config/sweeps/offline_lbf.yaml (src/sweep.py,
on Ray) and one results call with the datasets' normalised scores.

    python bench/offline_learning.py                                   # LBF 8x8-2p-2f-coop, 5 learners x 2 datasets
    python bench/offline_learning.py --seeds 1 2 3 --steps 1000        # shorter runs (the file: 3000 steps), seeds 1-3
    python bench/offline_learning.py --env mpe_spread --datasets expert imbalanced_1e --seeds 1 2 3
    python bench/offline_learning.py --env climbing --dataset-t-max 4000 --dataset-episodes 100 --steps 60 \\
        --algs bc --seeds 1 --results /tmp/res --out /tmp/bench test_nepisode=4    # a smoke run

(1) `scripts/reference_datasets.py --envs <env>` makes the reference datasets under <results>/datasets/<env label>/
(it skips a finished behaviour run and datasets already collected from it; `--data-dir` uses existing datasets
instead). (2) The sweep offline_lbf: every alg x dataset (its `offline_dataset` grid) x seed, `offline_steps`
gradient steps of 32 episodes evaluated every offline_test_interval steps (`--steps N`: N steps, evaluated every
N / 6); options and `with` updates (KEY=VALUE ...) change it, and the changed sweep gets a name of its own
(bench/study.py). (3) `src/results.py <sweep folder> --by alg,offline_dataset --normalise <data dir>/returns.json`:
per (learner, dataset) the final greedy test return (the last evaluation), mean ± std and bootstrap CI over seeds,
and the normalised score (R - R_low) / (R_high - R_low) with the datasets' own mean returns as references (low:
imbalanced_1e or random, high: expert_all or expert), in <out>/offline_learning_<env>/ (tables, curves,
marl-eval JSON), its table in <out>/offline_learning_<env>.md and its rows in <out>/offline_learning_<env>.json.
"""
import argparse
import os
import sys

import study
from utils.cli import parse_updates  # src/ is on sys.path through study
from utils.config import build_config
from utils.paths import env_label

BASE = "offline_lbf"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="lbf_8x8_2p_2f_coop")
    p.add_argument("--datasets", nargs="+", default=["expert", "mix_200e_1000p"])
    p.add_argument("--algs", nargs="+", default=None, help="default: the sweep file's (bc bc50 bc_beta omar omiga)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the sweep file's (0 1 2)")
    p.add_argument("--steps", type=int, default=None, help="gradient steps (default: the sweep file's)")
    p.add_argument("--data-dir", default=None, help="use the datasets here and make none (default: make them in "
                                                    "<results>/datasets/<env label>)")
    p.add_argument("--dataset-t-max", type=int, default=None,
                   help="behaviour policy training steps (scripts/reference_datasets.py --t-max; smoke runs)")
    p.add_argument("--dataset-episodes", type=int, default=None,
                   help="episodes per dataset (scripts/reference_datasets.py --episodes; smoke runs)")
    p.add_argument("--out", default=os.path.join(study.ROOT, "results", "bench"))
    study.add_ray_options(p)
    p.add_argument("extra", nargs="*", help="more `with` updates for every run, e.g. test_nepisode=16")
    a = p.parse_args(argv)

    data_dir = a.data_dir
    if data_dir is None:
        data_dir = os.path.join(os.path.abspath(a.results), "datasets", env_label(build_config("bc", a.env)))
        cmd = [sys.executable, os.path.join(study.ROOT, "scripts", "reference_datasets.py"), "--envs", a.env,
               "--results", os.path.abspath(a.results)]
        for option, value in (("--t-max", a.dataset_t_max), ("--episodes", a.dataset_episodes)):
            if value is not None:
                cmd += [option, str(value)]
        rc = study.run(cmd)
        if rc != 0:
            return rc
    datasets = []
    for d in a.datasets:
        path = os.path.abspath(os.path.join(data_dir, f"{d}.h5"))
        datasets.append(os.path.relpath(path, study.ROOT) if path.startswith(study.ROOT + os.sep) else path)

    with_ = {}
    if a.steps:
        interval = max(1, a.steps // 6)
        with_ = {"offline_steps": a.steps, "offline_test_interval": interval, "offline_log_interval": interval}
    with_.update(study.flatten(parse_updates(a.extra)) if a.extra else {})
    diff = study.changes(BASE, algs=a.algs, envs=[a.env], seeds=a.seeds, with_=with_,
                         grid={"offline_dataset": datasets})
    code, folders = study.run_sweeps([(BASE, diff)], a)
    if not folders:
        return code
    options = ["--by", "alg,offline_dataset", "--normalise", os.path.join(data_dir, "returns.json")]
    return max(code, study.results(folders, a.out, f"offline_learning_{a.env}", options))


if __name__ == "__main__":
    sys.exit(main())
