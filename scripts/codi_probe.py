"""Does a trained CODI generator make the LBF transitions that collect food, and does the dynamics check keep them?

    python scripts/codi_probe.py results/augment/codi/Foraging-8x8-2p-2f-coop-v3/<id> [--segments 256] [--seeds 0 1 2]
        [--delta 0.01] [--target quantile:0.9] [--set sampling_steps=25 ...] [--out probe.md]

From the artifact folder's models (meta.json names the source dataset, the env and the model settings), on the
held-out episodes' segments: the real segments, then generated ones from the same first observations at the target
return-to-go, with the augmenter's guidance and the sampling settings a generate command would use (the config's,
or --set KEY=VALUE as `with` would take them). Each row reports the share of segments in which a food of the first
observation is gone by the last (`food collected`: the env's state_from_obs, on the grid the views describe), the
dynamics check's pass rate at δ (an available â and the step error ≤ δ at every transition stitching judges: those
of the episode, up to the first terminal), and the
pass rate of the segments that collect food, and the share of those whose every collection LBF's rule allows
(agents next to the food that stay put, their levels summing to at least its level: the check f_fwd learnt to
make). Generated rows:
  raw            the generator's own segments (off LBF's grid: a food "gone" is a slot that drifted or faded);
  snap_obs       each raw segment snapped onto the grid by the env hook from its first observation (generation's
                 snap_obs: a food stays while the views show it at its own cell);
  snap, nearest  the same, but a food stays while some shown food is nearer to it than to the first observation's
                 other foods (foods never move in LBF, so a drifted slot still means that food);
  snap every step, (nearest)  the snap applied to every denoising step's clean estimate (the sampler's `project`
                 hook, as project_views uses it), so that sampling commits to one grid as it denoises.
The last four are study variants for LBF (docs/studies/codi_lbf/README.md), not generation options.
"""
import argparse
import json
import os
import sys
from types import SimpleNamespace

import _bootstrap  # noqa: F401 (src/ on sys.path)
import numpy as np
import torch as th
import yaml

from augmenters import REGISTRY
from augmenters.codi.settings import resolve
from augmenters.codi.stitching import resolve_target_rtg
from envs import env_from_args
from offline.reader import OfflineDataset
from utils.config import build_config

# meta.json's settings -> the config keys that rebuild the same models
MODEL_KEYS = {"dim": "diffusion_dim", "dim_mults": "diffusion_dim_mults", "n_timesteps": "diffusion_timesteps"}


def load(folder, sets=()):
    with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    s = meta["settings"]
    overrides = {"offline_dataset": meta["source"]["path"], "env_args": dict(meta["env_args"]),
                 "augment_preset": s["preset"], "segment_horizon": s["horizon"], "seed": s["seed"],
                 "dynamics_hidden": s["dynamics_hidden"], "augment_checkpoint": folder,
                 **{MODEL_KEYS[k]: v for k, v in s["model"].items() if k in MODEL_KEYS}}
    if s.get("label_name"):
        overrides["augment_label_name"] = s["label_name"]
    for item in sets:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return meta, overrides


def nearest_food_snap(env):
    """env.snap_obs with `first`, but a food of `first` stays while some shown food (rounded level > 0) is nearer to
    it than to first's other foods, gone for good after; the rest (agents, levels, order) is the env's rule."""
    def snap(obs, first=None):
        if first is None:
            return env.snap_obs(obs)
        m = env.n_food
        shown = env._views(np.asarray(obs, np.float64))[0].mean(-3)  # [..., T, m, 3] the views' mean foods
        foods = env._views(np.asarray(first, np.float64))[0].mean(-3)  # [..., m, 3] first's, exact
        present = np.rint(foods[..., 2]) > 0
        d = np.linalg.norm(shown[..., :, None, :2] - foods[..., None, None, :, :2], axis=-1)  # [..., T, slot, food]
        nearest = np.where(present[..., None, None, :], d, np.inf).argmin(-1)
        hit = (nearest[..., None] == np.arange(m)) & (np.rint(shown[..., 2]) > 0)[..., None]
        here = np.logical_and.accumulate(hit.any(-2) & present[..., None, :], axis=-2)  # [..., T, food]
        kept = np.where(here[..., None], foods[..., None, :, :], [-1.0, -1.0, 0.0])
        cleaned = np.array(obs, dtype=np.float32)
        cleaned[..., : 3 * m] = kept.reshape(*kept.shape[:-2], 1, 3 * m)  # any order: the env's snap sorts them
        return env.snap_obs(cleaned, first=first)
    return snap


def grid_projection(normaliser, snap, o0):
    """The sampler's `project` hook: normalised segments [B, H, n, O] snapped from the real first observations `o0`
    [B, n, O] (normalised). Inside the denoising loop step 0 holds the network's estimate of o0, not o0 itself."""
    first = normaliser.denormalise(o0.detach().cpu().numpy())

    def project(x):
        o = normaliser.denormalise(x.detach().cpu().numpy())
        o[:, 0] = first
        o[:, 1:] = snap(o[:, 1:], first=first)
        return th.as_tensor(np.asarray(normaliser.normalise(o), np.float32), device=x.device)
    return project


def judged_transitions(terminal, step_valid=None):
    """[B, H-1] bool: the transitions stitching judges (stitching.stitch): up to and including the first into a
    terminal observation (`terminal` [B, H-1], of observations 1..H-1); for real segments also only those their
    episode has (`step_valid` [B, H]: step_valid[:, h] = the transition h -> h+1 exists)."""
    B, steps = terminal.shape
    first = np.where(terminal.any(1), terminal.argmax(1) + 1, steps)
    judged = np.arange(steps)[None, :] < first[:, None]
    return judged if step_valid is None else judged & np.asarray(step_valid, bool)[:, :steps]


def judge(env, dynamics, normaliser, x, delta, step_valid=None):
    """(food collected [B], passes [B], every collection by LBF's rule [B]) for normalised segments x [B, H, n, O],
    over the transitions stitching would judge."""
    o = normaliser.denormalise(x.detach().cpu().numpy())
    B, H, n = o.shape[:3]
    terminal = np.asarray(env.terminal_from_obs(o[:, 1:]), bool).reshape(B, H - 1)
    judged = judged_transitions(terminal, None if step_valid is None else step_valid.cpu().numpy())
    state = env.state_from_obs(o, np.zeros((B, H, n)))
    m = env.n_food
    levels = state[..., 3 * n + 2: 3 * n + 3 * m: 3]  # [B, H, m] (0: gone)
    last = judged.sum(1)  # the last observation a judged transition reaches
    collected = ((levels[:, 0] > 0) & (levels[np.arange(B), last] == 0)).any(-1)
    lawful = lawful_collections(state, n, m, judged)
    avail = np.asarray(env.avail_actions_from_obs(o[:, :-1]))
    a_hat = dynamics.infer_actions(x, avail=th.as_tensor(avail, device=x.device))
    err = dynamics.step_errors(x, a_hat).cpu().numpy()
    taken = np.take_along_axis(avail, a_hat.cpu().numpy()[..., None], axis=-1)[..., 0] != 0  # [B, H-1, n]
    ok = ((err <= delta) & taken.all(-1) | ~judged).all(1)
    return collected, ok, lawful


def lawful_collections(state, n, m, judged):
    """[B] bool: every food that goes in a judged transition (`judged` [B, H-1]) went by LBF's rule: at the step
    before, agents on the cells next to it (4-neighbourhood) that did not move, their levels summing to at least the
    food's level."""
    agents = state[..., : 3 * n].reshape(*state.shape[:-1], n, 3)  # [B, H, n, (row, col, level)]
    foods = state[..., 3 * n: 3 * n + 3 * m].reshape(*state.shape[:-1], m, 3)
    gone = (foods[:, :-1, :, 2] > 0) & (foods[:, 1:, :, 2] == 0) & judged[..., None]  # [B, H-1, m]
    dist = np.abs(agents[:, :-1, :, None, :2] - foods[:, :-1, None, :, :2]).sum(-1)  # [B, H-1, n, m]
    stayed = (agents[:, 1:, :, :2] == agents[:, :-1, :, :2]).all(-1)[..., None]  # [B, H-1, n, 1]
    loaders = (dist == 1) & stayed
    enough = (loaders * agents[:, :-1, :, None, 2]).sum(-2) >= foods[:, :-1, :, 2]  # [B, H-1, m]
    return (~gone | enough).all((1, 2))


def row(name, collected, ok, lawful):
    def share(mask, of):
        return f"{mask[of].mean():.3f} ({int((mask & of).sum())})" if of.any() else "–"
    return (f"| {name} | {len(ok)} | {collected.mean():.3f} | {ok.mean():.3f} | {share(ok, collected)} | "
            f"{share(lawful, collected)} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", help="a CODI artifact folder results/augment/<augmenter>/<env>/<id>")
    p.add_argument("--segments", type=int, default=256, help="held-out segments (first observations) per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    p.add_argument("--delta", default=None, help="δ (default: the run's delta: auto, from held-out real steps)")
    p.add_argument("--target", default="quantile:0.9", help="target return-to-go (generation's target_rtg)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config keys of the sampling (sampling_steps, sampler, guidance_weights)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    a = p.parse_args(argv)
    th.set_num_threads(1)
    folder = os.path.realpath(a.artifact)
    meta, overrides = load(folder, a.set)
    config = build_config(meta["augmenter"], meta["env"], overrides)
    args = SimpleNamespace(**config)
    dataset = OfflineDataset.load(overrides["offline_dataset"])
    env = env_from_args(args)
    if not callable(getattr(env, "snap_obs", None)):
        sys.exit(f"{meta['env']} has no snap_obs hook: this probe is for full-sight LBF")
    aug = REGISTRY[meta["augmenter"]](resolve(args), overrides["offline_dataset"], dataset, meta["env"], "/tmp",
                                      meta["env"], env, checkpoint=folder)
    diffusion, dynamics, normaliser, _ = aug.load_models()
    valid = aug.valid_segments(normaliser)
    delta = float(a.delta) if a.delta is not None else aug.delta(dynamics, valid)
    target = resolve_target_rtg(a.target, np.asarray(dataset.returns, dtype=np.float64))
    g = aug.s.generation
    kw = dict(guidance=aug.guidance, guidance_weights=g["guidance_weights"], sampler=g["sampler"],
              n_steps=g["sampling_steps"])
    exact, nearest = env.snap_obs, nearest_food_snap(env)
    lines = [f"Artifact {os.path.relpath(folder)} ({meta['augmenter']}), δ = {delta:.4g}, target R = {target:.3g}, "
             f"sampling {g['sampler']} {g['sampling_steps']} steps, guidance {aug.guidance} "
             f"(weights {g['guidance_weights']}), seeds {a.seeds}, {a.segments} held-out first observations per seed.",
             "", "| segments | n | food collected | pass rate | of those collecting food: pass (n) | of those: "
             "LBF's rule allows every collection (n) |", "|---|---:|---:|---:|---|---|"]
    x_real = valid["x"]
    lines.append(row("real (held out)", *judge(env, dynamics, normaliser, x_real, delta, valid["step_valid"])))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(x_real), min(a.segments, len(x_real)), replace=False)
    o0 = x_real[pick, 0]
    out = {k: ([], [], []) for k in ("raw", "snap_obs", "snap, nearest", "snap every step", "snap every step, nearest")}
    for seed in a.seeds:
        raw = diffusion.sample(o0, target, generator=seed, **kw)
        runs = {"raw": raw, "snap_obs": grid_projection(normaliser, exact, o0)(raw),
                "snap, nearest": grid_projection(normaliser, nearest, o0)(raw),
                "snap every step": diffusion.sample(o0, target, generator=seed,
                                                    project=grid_projection(normaliser, exact, o0), **kw),
                "snap every step, nearest": diffusion.sample(o0, target, generator=seed,
                                                             project=grid_projection(normaliser, nearest, o0), **kw)}
        for k, x in runs.items():
            for acc, got in zip(out[k], judge(env, dynamics, normaliser, x, delta)):
                acc.append(got)
    lines += [row(k, *map(np.concatenate, v)) for k, v in out.items()]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    env.close()


if __name__ == "__main__":
    main()
