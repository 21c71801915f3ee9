"""Learning curves of QLLM vs learned mixers: the sweep files of a suite (src/sweep.py, on Ray) and one results call.

    python bench/learning_curves.py                                  # suite qllm: the sweeps qllm_lbf, qllm_climbing
    python bench/learning_curves.py --t-max 100000 --seeds 3         # shorter, seeds 1..3
    python bench/learning_curves.py --envs climbing --jobs 2         # one env's sweep, 2 trials at a time

Suite `qllm`: config/sweeps/qllm_lbf.yaml (QLLM with the shipped TFCAF vs QMIX vs VDN on LBF 8x8-2p-2f-coop, 400k
steps) and config/sweeps/qllm_climbing.yaml (QMIX, VDN, QLLM with the IGM gate on and off on climbing, 20k steps),
5 seeds each. Options change them (`--t-max` sets t_max, and evaluation every t_max / 20 steps, at least 1000;
`--seeds N` seeds 1..N): the sweep then gets a name of its own (src/study.py). Then `src/results.py` over the
sweep folders writes tables, learning curves and marl-eval JSON to <out>/learning_curves/, its table to
<out>/learning_curves.md and its rows to <out>/learning_curves.json. The same by hand:

    python src/sweep.py qllm_lbf && python src/sweep.py qllm_climbing
    python src/results.py results/sweeps/qllm_lbf results/sweeps/qllm_climbing --out results/bench/learning_curves
"""
import argparse
import os
import sys

import study

# suite -> env config -> the sweep file that runs the suite on it
SUITES = {"qllm": {"lbf_8x8_2p_2f_coop": "qllm_lbf", "climbing": "qllm_climbing"}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="qllm", choices=sorted(SUITES))
    p.add_argument("--seeds", type=int, default=None, help="seeds 1..N (default: the sweep files' seeds)")
    p.add_argument("--t-max", type=int, default=None, help="every run's t_max (default: the sweep files')")
    p.add_argument("--envs", nargs="*", default=None, help="only these env configs of the suite")
    p.add_argument("--out", default=os.path.join(study.ROOT, "results", "bench"))
    study.add_ray_options(p)
    a = p.parse_args(argv)
    suite = SUITES[a.suite]
    unknown = sorted(set(a.envs or ()) - set(suite))
    if unknown:
        p.error(f"suite {a.suite} has no env {', '.join(unknown)} (it has: {', '.join(suite)})")
    with_ = {}
    if a.t_max:
        interval = max(a.t_max // 20, 1000)
        with_ = {"t_max": a.t_max, "test_interval": interval, "log_interval": interval}
    seeds = list(range(1, a.seeds + 1)) if a.seeds else None
    studies = [(base, study.changes(base, seeds=seeds, with_=with_)) for env, base in suite.items()
               if a.envs is None or env in a.envs]
    code, folders = study.run_sweeps(studies, a)
    if not folders:
        return code
    return max(code, study.results(folders, a.out, "learning_curves"))


if __name__ == "__main__":
    sys.exit(main())
