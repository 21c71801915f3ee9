"""H-step segments of a dataset's episodes (CODI: the unit that is labelled, distilled and generated).

A segment is H consecutive steps of one episode from any start t: the observations at t..t+H-1, the joint actions
and team rewards of the transitions t..t+H-1. Segments may overlap and may run past the episode's end: every field
is zero-padded there, with two masks, because an episode of L transitions has L+1 observations but L transitions:

    obs_valid [N, H]   observation t+h exists (t+h <= L)
    step_valid [N, H]  transition t+h exists (t+h < L): its action and reward are real

Starts are drawn only from real transitions (t < L), so every segment has at least one valid step.

    seg = segments(ds.arrays(), H=8, starts=segment_starts(filled, rng=..., fraction=0.1))
"""
from dataclasses import dataclass

import numpy as np

from utils.config import ConfigError


@dataclass
class Segments:
    episode: np.ndarray  # [N] int64: the episode (row of the arrays given) of each segment
    start: np.ndarray  # [N] int64: its first step
    obs: np.ndarray  # [N, H, n, O] float32
    actions: np.ndarray  # [N, H, n] int64 (0 where not step_valid)
    reward: np.ndarray  # [N, H] float32 team reward (0 where not step_valid)
    obs_valid: np.ndarray  # [N, H] bool
    step_valid: np.ndarray  # [N, H] bool
    rtg: np.ndarray  # [N] float32: undiscounted return from the start to the episode's end

    def __len__(self):
        return len(self.episode)

    @property
    def horizon(self):
        return self.obs.shape[1]


def episode_lengths(filled):
    """Transitions per episode, L = (filled steps) - 1, from `filled [E, T+1(, 1)]`."""
    filled = np.asarray(filled).reshape(len(filled), -1)
    return filled.sum(axis=1).astype(np.int64) - 1


def all_starts(filled):
    """Every (episode, t) with t a real transition (t < L): [M, 2] int64, episode-major."""
    lengths = episode_lengths(filled)
    ep = np.repeat(np.arange(len(lengths)), np.maximum(lengths, 0))
    t = np.concatenate([np.arange(L) for L in lengths]) if len(lengths) else np.zeros(0, np.int64)
    return np.stack([ep, t.astype(np.int64)], axis=1)


def segment_starts(filled, rng, fraction=None, count=None):
    """A random subset of `all_starts` without repeats (`fraction` of them, or `count`), sorted; all when neither."""
    starts = all_starts(filled)
    if fraction is None and count is None:
        return starts
    n = int(round(fraction * len(starts))) if count is None else int(count)
    if not 0 < n <= len(starts):
        raise ConfigError(f"segment_starts: asked for {n} of {len(starts)} segment starts; "
                         f"choose 0 < label_segments <= {len(starts)} (or a fraction in (0, 1])")
    pick = np.sort(rng.choice(len(starts), size=n, replace=False))
    return starts[pick]


def returns_to_go(arrays):
    """[E, T+1] float64: the undiscounted return from step t to the episode's end, over real transitions only
    (padding holds zeros, but is masked anyway)."""
    reward = np.asarray(arrays["reward"])[..., 0].astype(np.float64)
    lengths = episode_lengths(arrays["filled"])
    real = np.arange(reward.shape[1])[None, :] < lengths[:, None]
    return np.cumsum((reward * real)[:, ::-1], axis=1)[:, ::-1]


def segments(arrays, horizon, starts):
    """The segments of `arrays` (OfflineDataset.arrays(): obs, actions, reward, filled) at `starts [N, 2]`."""
    if horizon < 1:
        raise ValueError(f"segment horizon H must be >= 1, got {horizon}")
    obs, filled = arrays["obs"], arrays["filled"]
    E, T1 = obs.shape[:2]
    if horizon > T1 - 1:
        raise ValueError(f"segment horizon H={horizon} is longer than the episode limit {T1 - 1}: "
                         f"choose H <= episode_limit")
    starts = np.asarray(starts, dtype=np.int64).reshape(-1, 2)
    lengths = episode_lengths(filled)
    ep, t0 = starts[:, 0], starts[:, 1]
    if len(starts) and (ep.min() < 0 or ep.max() >= E or (t0 < 0).any() or (t0 >= lengths[ep]).any()):
        raise ValueError("segments: a start is outside the episodes or not at a real transition (t < L)")
    steps = t0[:, None] + np.arange(horizon)[None, :]  # [N, H]
    L = lengths[ep][:, None]
    obs_valid, step_valid = steps <= L, steps < L
    idx = np.minimum(steps, T1 - 1)
    out_obs = obs[ep[:, None], idx].astype(np.float32) * obs_valid[..., None, None]
    actions = np.asarray(arrays["actions"])[ep[:, None], idx][..., 0].astype(np.int64) * step_valid[..., None]
    reward = np.asarray(arrays["reward"])[ep[:, None], idx][..., 0].astype(np.float32) * step_valid
    rtg = returns_to_go(arrays)[ep, t0].astype(np.float32)
    return Segments(episode=ep, start=t0, obs=out_obs, actions=actions, reward=reward,
                    obs_valid=obs_valid, step_valid=step_valid, rtg=rtg)
