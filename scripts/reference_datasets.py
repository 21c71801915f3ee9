"""The reference offline datasets in one command: train behaviour policies online, then collect datasets.

    python scripts/reference_datasets.py                      # all three envs (about 25 min on 2 CPU cores)
    python scripts/reference_datasets.py --envs climbing      # one env
    python scripts/reference_datasets.py --envs smax          # SMAX 3m (./install.sh smax; not in the default three)
    python scripts/reference_datasets.py --envs smax_5m_vs_6m # SMAX 5m_vs_6m (the same install; MAPPO 5M steps)
    python scripts/reference_datasets.py --episodes 200       # fewer episodes per dataset (collect_episodes=200)
    python scripts/reference_datasets.py --envs mpe_spread --env-arg N=4 --datasets imbalanced_1e expert_2 expert_all
                                                              # spread with 4 agents, CODI's three datasets only

For each env it (1) trains the behaviour policy with src/main.py (saving checkpoints along the way, the
source of the medium and poor policies), unless a finished run is already there, and (2) runs
`--config=collect` with config/runs/collect.yaml's datasets (expert, medium, poor, random, 200 expert +
1000 poor, imbalanced with one expert agent, two experts, all experts). Datasets go to
results/datasets/<env label>/<name>.h5 and the mean returns of the recipe's datasets (no other file of the
folder) to results/datasets/reference_returns.{json,md}. Rerunning skips what is complete (training runs, and
datasets collected from the same behaviour run with the same settings), so an interrupted recipe resumes; a
dataset of another source at a recipe path is an error (--overwrite recollects it).
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import _bootstrap  # noqa: F401 (src/ on sys.path)

from utils.checkpoint import load_run_config
from utils.cli import parse_updates
from utils.config import build_config, load_alg
from utils.files import write_json_atomic, write_text_atomic
from utils.paths import REPO_ROOT, RESULTS_ROOT, SRC_DIR, env_label

# env config -> how its behaviour policy is trained (settings measured to reach a strong policy on 2 cores)
# and collected. Climbing: QMIX's greedy checkpoints play one joint action each (the converged (2,2) = 125, a
# lucky initial (0,0) = 275), so there are no intermediate greedy policies; its behaviours act with their
# training epsilon instead (annealed by half-way), which grades the checkpoints from random to expert.
RECIPES = {
    "climbing": {"alg": "qmix", "t_max": 20000, "save_model_interval": 1000,
                 "train": lambda t_max: [f"epsilon_anneal_time={t_max // 2}"], "collect": ["collect_greedy=False"]},
    "lbf_8x8_2p_2f_coop": {"alg": "mappo", "t_max": 1000000, "save_model_interval": 50000},
    # spread: MAPPO scores 0.72 (normalised) by 100k steps, so checkpoints every 100k left poor = medium = that
    # policy (2026-12-04); every 10k gives the early, weaker policies (150 checkpoints, ~1 min to score)
    "mpe_spread": {"alg": "mappo", "t_max": 1500000, "save_model_interval": 10000},
    # SMAX 3m (MisoDICE's SMAC stand-in; needs ./install.sh smax). Measured 2026-12-06 (seed 1, this 2-core VM):
    # MAPPO 1.5M steps in 15 min 23 s (1,630 env steps/s), greedy win rate 0.60-0.83 in the evaluations after 500k
    # steps, 0.73 at the last (30 greedy episodes every 50k steps instead of the env config's 10k); the expert
    # dataset wins 75% of its 1000 episodes; scoring and collection 3.5 min. The policy is at 0.93 normalised by its
    # first checkpoint (150k), so `medium` is that near-expert policy (the collection warns); `poor` is the step-166
    # checkpoint (0.165), and mix_200e_1000p, the only SMAX dataset MisoDICE uses, is 200 expert + 1000 of those.
    # Denser checkpoints would cost ~7 s of scoring each (a fresh runner of 8 JAX env processes per policy).
    "smax": {"alg": "mappo", "t_max": 1500000, "save_model_interval": 150000,
             "train": lambda t_max: ["test_interval=50000", "log_interval=50000"]},
    # SMAX 5m_vs_6m (MisoDICE's main SMAC map; the issue allows it if a useful behaviour trains in <= 2 h on 2 cores).
    # `--envs smax --env-arg map_name=5m_vs_6m` trains another behaviour run (reference/smax-5m_vs_6m) for the same
    # datasets/5m_vs_6m/ folder; the collection then refuses data of the other run (--overwrite replaces it): use one.
    # Measured 2026-12-06 (seed 1, this 2-core VM, shared with other jobs all along): MAPPO 5M steps in 1 h 52 min
    # (740 env steps/s); greedy win rate first 0.83 at 1.1M steps (28 min), 0.67-1.00 (mean 0.90) in the 45
    # evaluations after 2M (30 episodes each), 0.93 at the last. Scoring 21 checkpoints and collecting took 7 min. The
    # expert data wins 92% of its episodes; `poor` is the 250k checkpoint (0.28 normalised: it kills about half the
    # enemies and wins 1%); `medium` is the 1M checkpoint (0.83: none scores between 0.46 and that).
    "smax_5m_vs_6m": {"alg": "mappo", "t_max": 5000000, "save_model_interval": 250000},
    # CODI's World (MPE predator-prey, 3 predators vs 3 random prey; bench/codi_table.py --envs mpe_world). Not yet
    # run here: sized as spread N=3 (MAPPO 1.5M, 15 min there).
    "mpe_world": {"alg": "mappo", "t_max": 1500000, "save_model_interval": 100000},
}
OPT_IN = ("smax", "smax_5m_vs_6m", "mpe_world")  # recipes run only when named with --envs


def finished_run(models_root, t_max, save_model_interval=None):
    """The newest behaviour run under models_root whose last checkpoint reached t_max, or None. With
    save_model_interval, a run that saved its checkpoints at another interval is not the recipe's (its qualities come
    from other checkpoints): it is named and passed over."""
    best = None
    for run in sorted(glob.glob(os.path.join(models_root, "*"))):
        steps = [int(d) for d in os.listdir(run) if d.isdigit()]
        config = load_run_config(run)
        if not steps or max(steps) < t_max or config is None:
            continue
        if save_model_interval is not None and config.get("save_model_interval") != save_model_interval:
            print(f"passing over {run}: it saved checkpoints every {config.get('save_model_interval')} steps, the "
                  f"recipe every {save_model_interval} (its qualities come from those checkpoints)", flush=True)
            continue
        best = run
    return best


def main_py(*args):
    cmd = [sys.executable, os.path.join(SRC_DIR, "main.py"), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)


def reference_datasets(env, recipe, results, seed, episodes=None, overwrite=False, env_args=(), only=()):
    """`env_args`: KEY=VALUE tokens of env_args (e.g. N=4) for training and collection; its behaviour run then goes
    to reference/<env>-<env label> (the plain recipe's stays reference/<env>). `only`: collect these datasets."""
    args = [f"env_args.{a}" for a in env_args]
    label = env_label(build_config(recipe["alg"], env, parse_updates(args)))
    behaviour_dir = os.path.join(results, "reference", f"{env}-{label}" if args else env)
    run = finished_run(os.path.join(behaviour_dir, "models"), recipe["t_max"], recipe["save_model_interval"])
    if run is None:
        main_py(f"--config={recipe['alg']}", f"--env-config={env}", "with", f"seed={seed}",
                f"t_max={recipe['t_max']}", f"save_model_interval={recipe['save_model_interval']}",
                f"local_results_path={behaviour_dir}", *args, *recipe.get("train", lambda t: [])(recipe["t_max"]))
        run = finished_run(os.path.join(behaviour_dir, "models"), recipe["t_max"], recipe["save_model_interval"])
        if run is None:
            raise SystemExit(f"{env}: the training run finished but left no finished behaviour run (checkpoints up "
                             f"to t_max={recipe['t_max']} every {recipe['save_model_interval']} steps) under "
                             f"{os.path.join(behaviour_dir, 'models')}: see its log above")
    else:
        print(f"{env}: using the finished behaviour run {run}", flush=True)
    dataset_dir = os.path.join(results, "datasets", label)
    extra = [*args, *recipe.get("collect", [])]
    if only:
        extra.append(f"collect_only={list(only)!r}")
    if episodes:
        extra.append(f"collect_episodes={episodes}")
    if overwrite:
        extra.append("collect_overwrite=True")
    main_py("--config=collect", f"--env-config={env}", "with", f"seed={seed}", f"behaviour_checkpoint={run}",
            f"dataset_dir={dataset_dir}", f"local_results_path={results}", *extra)
    with open(os.path.join(dataset_dir, "returns.json")) as f:
        table = json.load(f)
    recipe_names = set(load_alg("collect")["collect_datasets"])  # other datasets of the folder are not the recipe's
    return label, {**table, "datasets": [r for r in table["datasets"] if r["dataset"] in recipe_names]}


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=[e for e in RECIPES if e not in OPT_IN], choices=list(RECIPES),
                        help=f"default: every recipe but {', '.join(OPT_IN)} (opt-in: an extra install; smax took "
                             "19 min here, smax_5m_vs_6m 2 h)")
    parser.add_argument("--episodes", type=positive_int, default=None,
                        help="episodes of each 1000-episode dataset (>= 1; the mixture scales with it)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recollect the datasets (collect_overwrite=True), e.g. after retraining a behaviour")
    parser.add_argument("--results", default=RESULTS_ROOT)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--t-max", type=int, default=None, help="override every env's training steps (smoke runs)")
    parser.add_argument("--env-arg", nargs="*", default=[], metavar="KEY=VALUE",
                        help="env_args of training and collection, e.g. N=4 (MPE spread's agents); the behaviour run "
                             "goes to <results>/reference/<env>-<env label>")
    parser.add_argument("--datasets", nargs="+", default=None, choices=list(load_alg("collect")["collect_datasets"]),
                        help="collect only these datasets of the recipe (collect_only), e.g. imbalanced_1e expert_2")
    args = parser.parse_args(argv)
    args.results = os.path.abspath(args.results)  # the commands run from the repository root
    tables = {}
    for env in args.envs:
        recipe = dict(RECIPES[env])
        if args.t_max:
            recipe.update(t_max=args.t_max, save_model_interval=max(1, args.t_max // 4))
        label, table = reference_datasets(env, recipe, args.results, args.seed, args.episodes, args.overwrite,
                                          args.env_arg, args.datasets or ())
        tables[label] = table
    write_summary(tables, os.path.join(args.results, "datasets"))


def write_summary(tables, folder):
    """One table over envs: each dataset's episodes and mean ± std return (merged with earlier invocations)."""
    path = os.path.join(folder, "reference_returns.json")
    merged = json.load(open(path)) if os.path.isfile(path) else {}
    merged.update(tables)
    write_json_atomic(path, merged)
    lines = ["| env | dataset | episodes | mean return | std | composition |", "|---|---|---:|---:|---:|---|"]
    for label, table in sorted(merged.items()):
        for row in table["datasets"]:
            lines.append(f"| {label} | {row['dataset']} | {row['episodes']} | {row['return_mean']:.3f} | "
                         f"{row['return_std']:.3f} | {row['composition']} |")
    write_text_atomic(os.path.join(folder, "reference_returns.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
