"""Offline learners' gradient steps per second at batch 32 episodes.

    python bench/offline_learners.py                                  # every run=offline config, LBF + MPE
    python bench/offline_learners.py --algs bc omiga --envs mpe_spread --steps 50
    python bench/offline_learners.py --algs omiga misodice misodice_vdn indd --set hidden_dim=128   # same widths
    ... --set disc_steps=0             # the DICE learners' nu stage (disc_steps=0 nu_steps=0: the policy stage;
                                       # schedule=joint: all three each step); the report names the stage timed

For each env a dataset of random-policy episodes is collected once (full-length episodes, so every batch
has the env's longest shape), then each learner is built as `run: offline` builds it and timed on
`--steps` updates after 5 warm-up updates (`--set key=value`: config overrides for every learner, e.g. one
actor width for all): `train` alone (updates/s) and sampling + train (steps/s of an
offline run without its evaluations). Learners on preference pairs (omapl, marl_sl) draw preference_batch_size
pairs of an oracle set stored in the bench dataset (two episodes each: episodes/step). Writes
results/bench/offline_learners.{json,md}.
"""
import argparse
import logging
import os
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch as th
import yaml

from report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from offline import DatasetWriter, OfflineDataset  # noqa: E402
from offline.label_store import content_fingerprint, write_preferences  # noqa: E402
from offline.preferences import load_preferences  # noqa: E402
from offline.sampling import Sampler  # noqa: E402
from run.offline import draw, offline_config  # noqa: E402
from run.setup import build  # noqa: E402
from utils.config import available, build_config, load_alg  # noqa: E402

OFFLINE = [a for a in available("algs") if load_alg(a).get("run") == "offline"]


def context(alg, env, overrides):
    config = build_config(alg, env, overrides)
    config.update(seed=0, use_tensorboard=False, use_cuda=False)
    config["env_args"]["seed"] = 0
    run = SimpleNamespace(info={}, log_scalar=lambda *a: None)
    return build(run, offline_config(config), logging.getLogger("bench"))


def random_dataset(env, path, episodes):
    ctx = context("qmix", env, {"epsilon_start": 1.0, "epsilon_finish": 1.0})
    with DatasetWriter(path, ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args, vars(ctx.args)) as w:
        for _ in range(episodes):
            w.add(ctx.runner.run(test_mode=False), qualities="expert")
    ctx.runner.close_env()


PREFERENCES = "bench"  # an oracle preference set stored in the bench dataset


def add_preferences(path, n_pairs=512):
    """Random distinct pairs labeled by the return rule (timing only: which wins does not change the cost)."""
    returns = OfflineDataset.load(path).returns
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.permutation(len(returns)) for _ in range(2)], 1)[: n_pairs]
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    r1, r2 = returns[pairs[:, 0]], returns[pairs[:, 1]]
    label = np.where(r1 > r2, 1.0, np.where(r1 < r2, 0.0, 0.5))
    write_preferences(path, PREFERENCES, pairs, label, {"labeler": "bench"}, content_fingerprint(path))


def time_learner(alg, env, data, steps, batch_size, overrides=None):
    known = build_config(alg, env, {})  # an override applies to the learners whose config has the key
    ctx = context(alg, env, {**{k: v for k, v in (overrides or {}).items() if k in known}, "batch_size": batch_size})
    learner, sampler = ctx.learner, Sampler(0)
    # learners on preference pairs (omapl, marl_sl) get preference_batch_size pairs per step (2 episodes each)
    sources = {"data": data, "preferences": load_preferences(data, PREFERENCES, 0.5)}
    train_s = total_s = 0.0
    stages = []  # the DICE learners' schedule stage of each timed update (disc, nu, actor or joint)
    for i in range(steps + 5):
        stage = learner.stage() if i >= 5 and hasattr(learner, "stage") else None
        if stage and stage not in stages:
            stages.append(stage)
        t0 = time.perf_counter()
        batches = {name: draw(sampler, name, sources.get(name, data), ctx.args) for name in sorted(learner.batches)}
        t1 = time.perf_counter()
        learner.train(batches, i, i * batch_size)
        t2 = time.perf_counter()
        if i >= 5:
            train_s += t2 - t1
            total_s += t2 - t0
    ctx.runner.close_env()
    first = next(iter(batches.values()))
    first = first if "preferences" not in batches else first.episodes
    return {"alg": alg, "env": env, "stage": "+".join(stages) or "-", "batch_episodes": first.batch_size,
            "T": int(first.max_seq_length),
            "updates_per_s": steps / train_s, "steps_per_s_with_sampling": steps / total_s}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--algs", nargs="+", default=OFFLINE)
    p.add_argument("--envs", nargs="+", default=["lbf_8x8_2p_2f_coop", "mpe_spread"])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every learner whose config has the key")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    a = p.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in a.set)}
    th.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for env in a.envs:
            path = os.path.join(tmp, f"{env}.h5")
            random_dataset(env, path, a.episodes)
            add_preferences(path)
            data = OfflineDataset.load(path)
            for alg in a.algs:
                rows.append(time_learner(alg, env, data, a.steps, a.batch_size, overrides))
                print(rows[-1], flush=True)
    lines = [f"Offline learners, batch {a.batch_size} episodes, {a.steps} timed steps, 1 torch thread, CPU"
             + (f", overrides {' '.join(a.set)}" if a.set else ""),
             "", "| env | alg | stage timed | episodes/step | T | updates/s (train) | steps/s (sample + train) |",
             "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['env']} | {r['alg']} | {r['stage']} | {r['batch_episodes']} | {r['T']} | "
              f"{r['updates_per_s']:.1f} | {r['steps_per_s_with_sampling']:.1f} |" for r in rows]
    write_report(a.out, "offline_learners", rows, lines)


if __name__ == "__main__":
    main()
