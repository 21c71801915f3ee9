"""MisoDICE's ambiguities (a)-(f) and baselines on a noisy climbing mixture (~1 min per variant, 2 cores).

    python bench/misodice_ablations.py [variant ...]          # default: all; STEPS=400 (env) updates per run

200 expert episodes at the optimum (0, 0) with 10% random actions, 1000 poor ones at the safe (2, 2) with 30%;
25 steps; D_E = the expert episodes. 3 seeds each; greedy return (optimum 275, safe 125), first joint action and
the BC weights' mean, max and effective sample size fraction. Writes results/bench/misodice_ablations.{json,md}.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch as th

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "src"), os.path.join(ROOT, "tests")]
from helpers import make_ctx  # noqa: E402
from offline import DatasetWriter, OfflineDataset  # noqa: E402
from report import write_report  # noqa: E402

th.set_num_threads(1)
PAY = np.array([[11, -30, 0], [-30, 7, 6], [0, 0, 5]], np.float32)


def episodes(n, a, eps, rng, limit=25):
    acts = np.full((n, limit, 2), a)
    noise = rng.random((n, limit, 2)) < eps
    acts[noise] = rng.integers(0, 3, noise.sum())
    state = np.zeros((n, limit + 1, 6), np.float32)
    for t in range(limit):
        state[np.arange(n), t + 1, acts[:, t, 0]] = 1
        state[np.arange(n), t + 1, 3 + acts[:, t, 1]] = 1
    reward = np.zeros((n, limit + 1, 1), np.float32)
    reward[:, :limit, 0] = PAY[acts[..., 0], acts[..., 1]]
    actions = np.zeros((n, limit + 1, 2, 1), np.int64)
    actions[:, :limit, :, 0] = acts
    return {
        "obs": np.repeat(state[:, :, None], 2, axis=2),
        "state": state,
        "reward": reward,
        "actions": actions,
        "avail_actions": np.ones((n, limit + 1, 2, 3), np.uint8),
        "terminated": np.zeros((n, limit + 1, 1), np.uint8),
        "filled": np.ones((n, limit + 1, 1), np.uint8),
    }


path = os.path.join(ROOT, "results", "bench", "misodice_climbing_mix.h5")
os.makedirs(os.path.dirname(path), exist_ok=True)
if not os.path.exists(path):
    rng = np.random.default_rng(0)
    ctx = make_ctx("qmix", "climbing", seed=0)
    with DatasetWriter(path, ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args) as w:
        w.add_arrays(episodes(200, 0, 0.1, rng), qualities="expert")
        w.add_arrays(episodes(1000, 2, 0.3, rng), qualities="poor")
data = OfflineDataset.load(path)
expert = data.subset(np.flatnonzero(data.quality_code_array[:, 0] == data.quality_codes["expert"]))
perm = np.random.default_rng(1).permutation(len(data))
data = data.subset(np.sort(perm))

VARIANTS = {
    "default": ("misodice", {}),
    "a_lmix": ("misodice", {"mixer": "lmix", "disc_mixer": "lmix"}),
    "b_probs": ("misodice", {"disc_mix": "probs"}),
    "c_exp": ("misodice", {"nu_loss": "exp"}),
    "d_target": ("misodice", {"nu_target": True}),
    "e_batch2": ("misodice", {"batch_size": 2}),
    "f_joint": ("misodice", {"schedule": "joint"}),
    "s0_data_batch": ("misodice", {"s0_source": "data_batch"}),
    "misodice_vdn": ("misodice_vdn", {}),
    "indd": ("indd", {}),
    "bc0": ("bc", {}),
    "bc1": ("bc_beta", {"bc_beta": 1.0}),
}
STEPS, DISC, NU = int(os.environ.get("STEPS", 400)), 100, 100
cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
cli.add_argument("variants", nargs="*", metavar="variant", help=f"default: all ({', '.join(VARIANTS)})")
names = cli.parse_args().variants or list(VARIANTS)
unknown = [n for n in names if n not in VARIANTS]
if unknown:
    cli.error(f"unknown variant {unknown[0]!r}; the variants: {', '.join(VARIANTS)}")
out = {}
for name in names:
    alg, ov = VARIANTS[name]
    res = []
    for seed in range(3):
        th.manual_seed(seed)
        base = dict(hidden_dim=64, learner_log_interval=10**9)
        if alg.startswith("misodice") or alg == "indd":
            base.update(critic_hidden_dim=64, disc_steps=DISC, nu_steps=NU, batch_size=20)
        else:
            base.update(batch_size=20)
        cfg = {**base, **ov}
        ctx = make_ctx(alg, "climbing", seed=seed, **cfg)
        L = ctx.learner
        if hasattr(L, "fit_data"):
            L.fit_data(data)
        rng = np.random.default_rng(seed)
        bs = cfg["batch_size"]
        t0 = time.time()
        for step in range(STEPS):
            b = {"data": data.sample(bs, rng=rng), "expert": expert.sample(bs, rng=rng)}
            b = {k: v[:, : v.max_t_filled()] for k, v in b.items()}
            if "init" in L.batches:  # DICE's s0 batch: the initial states of other D_U episodes
                b["init"] = data.sample(ctx.args.s0_batch_size, rng=rng)[:, :1]
            L.train({k: b[k] for k in L.batches}, step, step)
        ep = ctx.runner.run(test_mode=True)
        ret = ep["reward"].sum().item()
        first = tuple(ep["actions"][0, 0, :, 0].tolist())
        stats = {}
        if alg not in ("bc", "bc_beta"):
            full = data.sample(64, rng=np.random.default_rng(99))
            full = full[:, : full.max_t_filled()]
            with th.no_grad():
                _, st = L.losses(full, expert.sample(64, rng=np.random.default_rng(98))[:, :26], "actor")
            stats = {
                k: round(float(st[k]), 3) for k in ("w_mean", "w_max", "w_ess", "adv_mean", "r_union_mean") if k in st
            }
        res.append({"seed": seed, "return": ret, "first": first, "s": round(time.time() - t0, 1), **stats})
        print(name, res[-1], flush=True)
    out[name] = res
lines = [
    f"MisoDICE ablations, noisy climbing mixture (200 expert (0,0) + 1000 poor (2,2)), {STEPS} updates, 3 seeds",
    "",
    "| variant | greedy returns | first joint actions | BC weight ESS |",
    "|---|---|---|---|",
]
for name, res in out.items():
    lines.append(
        f"| {name} | {[r['return'] for r in res]} | {[r['first'] for r in res]} | {[r.get('w_ess', '') for r in res]} |"
    )
write_report(os.path.join(ROOT, "results", "bench"), "misodice_ablations", out, lines)
