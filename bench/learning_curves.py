"""Learning curves of a suite: its sweep files (src/sweep.py, on Ray) and one results call. Suites: qllm (QLLM vs
learned mixers) and lca (issue 16's study: bench/lca_suite.py).

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

Suite `lca` (config/sweeps/lca_<env>.yaml, lca_llm_local.yaml, lca_openai.yaml; rows and defaults: bench/lca_suite.py):

    python bench/learning_curves.py --suite lca                          # 3 envs, baselines + oracle + noisy rows
    python bench/learning_curves.py --suite lca --envs two_switch --seeds 3 --rankers oracle noisy70_k1
    python bench/learning_curves.py --suite lca --rankers llm_k1 llm_k2  # the local LLM: hours of labeling per env
    python bench/learning_curves.py --suite lca --rankers openai_k1 --openai-url http://HOST:8000/v1 --openai-model M

writes results/bench/lca/lca.md and lca.json (the study table: final test success, steps to 0.9 success (Pistonball
0.8), AUC, label accuracy, LLM tokens/cost; every suite row, 'not run' with the reason where it did not run), and in
results/bench/lca/lca/ the figures fig3_panels, fig4_noise, fig5_queries (mean ± std of test and train success and
return) beside src/results.py's usual report. `--t-max N` sets every row's budget (20 evaluations).
"""
import argparse
import json
import os
import sys

import lca_suite
import study

# suite -> env config -> the sweep file that runs the suite on it
SUITES = {"qllm": {"lbf_8x8_2p_2f_coop": "qllm_lbf", "climbing": "qllm_climbing"},
          "lca": {env: f"lca_{env}" for env in lca_suite.ENVS}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="qllm", choices=sorted(SUITES))
    p.add_argument("--seeds", type=int, default=None, help="seeds 1..N (default: the sweep files' seeds)")
    p.add_argument("--t-max", type=int, default=None, help="every run's t_max (default: the sweep files')")
    p.add_argument("--envs", nargs="*", default=None, help="only these env configs of the suite")
    p.add_argument("--out", default=None, help="default results/bench (suite lca: results/bench/lca)")
    lca = p.add_argument_group("suite lca (bench/lca_suite.py)")
    lca.add_argument("--rankers", nargs="*", default=None, metavar="RANKER",
                     help=f"LCA rows (default: {' '.join(lca_suite.DEFAULT_RANKERS)}; all: "
                          f"{' '.join(lca_suite.RANKERS)})")
    lca.add_argument("--baselines", nargs="*", default=None, metavar="ALG",
                     help=f"baseline rows (default all: {' '.join(lca_suite.BASELINES)})")
    lca.add_argument("--openai-url", default=None, help="openai_k1: the server's /v1 URL (default api.openai.com)")
    lca.add_argument("--openai-model", default=None, help="openai_k1: the model; without it the row is not run")
    study.add_ray_options(p)
    a = p.parse_args(argv)
    suite = SUITES[a.suite]
    unknown = sorted(set(a.envs or ()) - set(suite))
    if unknown:
        p.error(f"suite {a.suite} has no env {', '.join(unknown)} (it has: {', '.join(suite)})")
    if a.suite == "lca":
        return run_lca(a, p)
    if a.rankers is not None or a.baselines is not None or a.openai_model or a.openai_url:
        p.error("--rankers, --baselines, --openai-url and --openai-model belong to --suite lca")
    a.out = a.out or os.path.join(study.ROOT, "results", "bench")
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


def run_lca(a, p):
    """Suite lca: the selected rows' sweeps, then src/results.py with the study spec (every row, 'not run' ones
    with their reason) into <out>/lca/ and <out>/lca.md, lca.json."""
    rankers = lca_suite.DEFAULT_RANKERS if a.rankers is None else tuple(a.rankers)
    baselines = lca_suite.BASELINES if a.baselines is None else tuple(a.baselines)
    for given, valid, option in ((rankers, lca_suite.RANKERS, "--rankers"),
                                 (baselines, lca_suite.BASELINES, "--baselines")):
        bad = sorted(set(given) - set(valid))
        if bad:
            p.error(f"{option}: unknown {', '.join(bad)} (valid: {' '.join(valid)})")
    envs = tuple(a.envs) if a.envs else lca_suite.ENVS
    seeds = list(range(1, a.seeds + 1)) if a.seeds else None
    with_ = lca_suite.t_max_changes(a.t_max) if a.t_max else None
    out = a.out or lca_suite.default_out(study.ROOT)
    os.makedirs(out, exist_ok=True)
    spec_path = os.path.join(out, "lca_study_spec.json")
    with open(spec_path, "w") as f:
        json.dump(lca_suite.study_spec(envs, baselines, rankers, a.openai_model), f, indent=2)
    studies = lca_suite.studies(envs, baselines, rankers, seeds, with_, a.openai_url, a.openai_model)
    if not studies:
        p.error("nothing to run: every row of the selection is 'not run' (see --rankers, --baselines)")
    code, folders = study.run_sweeps(studies, a)
    if not folders:
        return code
    return max(code, study.results(folders, out, "lca", ["--metric", "test_success_mean", "--study", spec_path]))


if __name__ == "__main__":
    sys.exit(main())
