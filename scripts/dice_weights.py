"""Where a trained MisoDICE / INDD model puts its behaviour-cloning weights over its own dataset D_U.

    python scripts/dice_weights.py results/models/<misodice run> [--step 7000] [--json out.json]

Rebuilds the run's learner from the model folder's config.json, loads the checkpoint (the latest, or the one
nearest --step), reads D_U and D_E as the run did (offline_dataset, offline_expert, offline_valid_fraction) and
prints, on the scale the training batches see (weights normalised by D_U's mean, clipped at weight_max):
D_E's share of the weight and of the transitions, the effective sample size fraction (sum w)^2 / (N sum w^2)
overall and within D_E and the rest, the mean weight at each step t of an episode, the spread of D_E's
per-episode mean weights, and what the weights train on: their share on ground-truth expert episodes and the
weight-averaged episode return, beside D_E alone (BC(β=1)) and D_U unweighted (BC(β=0)). Weighted BC learns from
where the weight is: a profile rising along t trains the policy mostly on the episodes' ends (README, MisoDICE:
time_limit_end).
"""
import argparse
import json
import logging
import os
import sys
from types import SimpleNamespace as SN

import _bootstrap  # noqa: F401 (src/ on sys.path)
import numpy as np
import torch as th

from components.episode_buffer import EpisodeBatch
from controllers import REGISTRY as mac_REGISTRY
from controllers.behaviour_mac import ENV_INFO_KEYS
from learners import REGISTRY as le_REGISTRY
from learners.dice import masked_means, weight_stats
from learners.misodice_learner import MisoDICELearner
from offline.reader import OfflineDataset
from offline.sampling import load_training_data
from utils.checkpoint import RUN_CONFIG, CheckpointError, locate_checkpoint
from utils.config import ConfigError, load_alg, load_yaml
from utils.logging import Logger
from utils.paths import repo_relative

# the config of a renamed run (name=...), by learner: its keys fill what a config saved before them lacks
BASE_CONFIG = {"misodice_learner": "misodice", "indd_learner": "indd"}
# keys added after runs were saved, with the value those runs trained with (absorbing: upgrade_state's rule)
LEGACY = {"absorbing": False}


def load_learner(path, step):
    """(args, learner class, checkpoint folder) of a MisoDICE-family run (its folder or one of its checkpoints), from
    the run's saved config. Keys the saved config lacks take the value the run trained with (LEGACY), else the
    algorithm's."""
    run_dir, checkpoint = locate_checkpoint(path, step)
    with open(os.path.join(run_dir, RUN_CONFIG)) as f:
        saved = json.load(f)
    learner_class = le_REGISTRY.get(saved.get("learner"))
    if not (isinstance(learner_class, type) and issubclass(learner_class, MisoDICELearner)):
        raise ValueError(f"{run_dir} is a '{saved.get('learner')}' run: only MisoDICE-family learners "
                         f"(misodice, misodice_vdn, indd) weight their data")
    try:
        alg = load_alg(saved["name"])
    except ConfigError:  # a renamed run (name=misodice_k400): its learner's config
        alg = load_alg(BASE_CONFIG.get(saved["learner"], "misodice"))
    args = SN(**{**load_yaml("", "default"), **alg, **LEGACY, **saved})
    args.use_cuda, args.device = False, "cpu"
    args.offline_dataset = [repo_relative(p) for p in np.atleast_1d(args.offline_dataset)]
    if args.offline_expert and not args.offline_expert.startswith(("quality:", "label:", "top:")):
        args.offline_expert = repo_relative(args.offline_expert)
    return args, learner_class, checkpoint


def per_step(x, mask):
    """[T-1]: the mean of x at each step of an episode over the rows given (None where none is real)."""
    means = masked_means(th.as_tensor(x), th.as_tensor(mask))  # over every axis but the last: the episodes
    return [float(v) if k > 0 else None for v, k in zip(means, mask.sum(0))]


def ess(w, mask):
    """The effective sample size fraction of the real entries, as the learner logs it (w_ess); None if none."""
    if not (mask > 0).any():
        return None
    return float(weight_stats(th.as_tensor(w), th.as_tensor(mask))["w_ess"])


def training_mix(w, mask, rows, returns, true_expert):
    """What weighted BC learns from when it draws transitions with weight w from `rows` (w = 1: plain BC on them):
    the share of the weight on ground-truth expert episodes (None without qualities) and the weight-averaged return
    of the episode a transition comes from. Both count transitions, so with w = 1 a long episode counts more than a
    short one (D_E's expert share here differs from its share of expert episodes)."""
    mass = (np.asarray(w, np.float64) * np.asarray(mask, np.float64))[rows].sum(1)  # [episodes]: each one's weight
    total = mass.sum()
    return {"true_expert_share": None if true_expert is None else float(mass[true_expert[rows]].sum() / total),
            "episode_return": float((mass * returns[rows]).sum() / total)}


def report(terms, expert_rows, returns=None, true_expert=None):
    """The numbers scripts/dice_weights.py prints, as a dict (INDD's k = n columns are averaged over agents).
    `returns` [episodes] and `true_expert` [episodes] bool (the dataset's ground-truth qualities, None if it has
    none) add `training_mix`: what the learned weights train on beside BC(β=1) on D_E and BC(β=0) on D_U."""
    w, r, mask = (terms[k].mean(-1) for k in ("w", "r", "mask"))
    rest = ~expert_rows
    out = {"episodes": int(len(w)), "expert_episodes": int(expert_rows.sum()), "ess_all": ess(w, mask),
           "w_by_step_all": per_step(w, mask), "r_by_step_all": per_step(r, mask)}
    if returns is not None:
        every, ones = np.ones(len(w), bool), np.ones_like(w)
        out["training_mix"] = {"weights": training_mix(w, mask, every, returns, true_expert),
                               "D_U": training_mix(ones, mask, every, returns, true_expert)}
        if expert_rows.any():
            out["training_mix"]["D_E"] = training_mix(ones, mask, expert_rows, returns, true_expert)
    if expert_rows.any() and rest.any():
        ep_mean = (w * mask)[expert_rows].sum(1) / np.maximum(mask[expert_rows].sum(1), 1)
        out.update(expert_weight_share=float((w * mask)[expert_rows].sum() / (w * mask).sum()),
                   expert_transition_share=float(mask[expert_rows].sum() / mask.sum()),
                   ess_expert=ess(w[expert_rows], mask[expert_rows]), ess_rest=ess(w[rest], mask[rest]),
                   expert_episode_mean_quantiles=dict(zip(("0", "10", "50", "90", "100"), np.quantile(
                       ep_mean, [0, 0.1, 0.5, 0.9, 1]).tolist())))
        for name, rows in (("expert", expert_rows), ("rest", rest)):
            out[f"w_by_step_{name}"] = per_step(w[rows], mask[rows])
            out[f"r_by_step_{name}"] = per_step(r[rows], mask[rows])
    return out


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def print_report(out, checkpoint):
    print(f"{checkpoint}: {out['episodes']} episodes in D_U, {out['expert_episodes']} of them in D_E")
    print(f"effective sample size fraction: all {fmt(out['ess_all'], 3)}", end="")
    split = "ess_expert" in out
    if split:
        print(f", within D_E {fmt(out['ess_expert'], 3)}, within the rest {fmt(out['ess_rest'], 3)}")
        print(f"D_E holds {out['expert_weight_share']:.3f} of the weight and "
              f"{out['expert_transition_share']:.3f} of the transitions")
        q = out["expert_episode_mean_quantiles"]
        print("D_E episodes' mean weight, quantiles 0/10/50/90/100%: " + " / ".join(f"{v:.2f}" for v in q.values()))
    else:
        print(" (D_E is a separate file, or all of D_U: no split)")
    if "training_mix" in out:
        print("\nwhat weighted BC trains on (transitions drawn by weight): share of the weight on ground-truth expert "
              "episodes, and the weight-averaged return of a transition's episode:")
        names = {"weights": "these weights", "D_E": "D_E alone (BC(β=1))", "D_U": "D_U unweighted (BC(β=0))"}
        for key, mix in out["training_mix"].items():
            print(f"  {names[key]:<26} true expert {fmt(mix['true_expert_share'], 3)}   "
                  f"return {mix['episode_return']:.4g}")
    groups = ["all"] + (["expert", "rest"] if split else [])
    names = {"all": "all", "expert": "D_E", "rest": "rest"}
    print("\nmean BC weight w and log-ratio reward r at each step t of an episode:\n")
    print("| t | " + " | ".join(f"w {names[g]}" for g in groups) + " | " + " | ".join(f"r {names[g]}" for g in groups)
          + " |")
    print("|---:|" + "---:|" * (2 * len(groups)))
    for t in range(len(out["w_by_step_all"])):
        print(f"| {t} | " + " | ".join(fmt(out[f"{k}_by_step_{g}"][t]) for k in ("w", "r") for g in groups)
              + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", help="a MisoDICE / MisoDICE-VDN / INDD run's folder, results/models/<run> "
                                          "(or one of its numbered checkpoints)")
    parser.add_argument("--step", type=int, default=0, help="the checkpoint nearest this step (default: latest)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = parser.parse_args(argv)
    th.set_num_threads(1)
    log = logging.getLogger("dice_weights")
    try:
        args, learner_class, checkpoint = load_learner(a.model_dir, a.step)
    except (OSError, ValueError, CheckpointError) as e:
        parser.error(str(e))
    first = OfflineDataset.load(args.offline_dataset[0], lazy=True)
    env_info = dict(first.env_info)
    scheme, groups, preprocess = first.scheme()
    first.close()
    for k in ENV_INFO_KEYS:
        setattr(args, k, env_info[k])
    data, _, expert = load_training_data(args, env_info, log)
    batch_scheme = EpisodeBatch(scheme, groups, 1, 1, preprocess=preprocess).scheme
    mac = mac_REGISTRY[args.mac](batch_scheme, groups, args)
    learner = learner_class(mac, batch_scheme, Logger(log), args)
    try:
        learner.load_models(checkpoint)
    except (CheckpointError, RuntimeError) as e:  # RuntimeError: torch's mis-sized or missing keys
        parser.error(f"cannot load {checkpoint} into the learner its config.json describes: {e}")
    terms = learner.dataset_weights(data)
    expert_rows = np.zeros(len(data), bool)
    positions = None if expert is None else data.positions_of(expert)
    if positions is not None:  # D_E inside D_U (quality:, label:, top:); with a validation split, its training part
        expert_rows[positions] = True
    # ground truth: every agent of the episode expert (offline_expert=quality:); None for data without expert episodes
    # (an imported dataset's agents are all "unknown": a share of 0 would read as a measurement)
    true_expert = (data.quality_code_array == data.quality_codes.get("expert", -1)).all(axis=1)
    true_expert = true_expert if true_expert.any() else None
    out = report(terms, expert_rows, np.asarray(data.returns, np.float64), true_expert)
    print_report(out, checkpoint)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"checkpoint": os.path.abspath(checkpoint), **out}, f, indent=1, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
