"""Tiny synthetic datasets for the labeling tests: climbing-shaped episodes (2 agents, 3 actions, 6-dim obs/state,
episode_limit 25) with chosen lengths, rewards and qualities, written through the real DatasetWriter."""
import numpy as np

from offline import DatasetWriter

ENV_ARGS = {"game": "climbing", "episode_limit": 25, "penalty": -100}
INFO = {"n_agents": 2, "n_actions": 3, "obs_shape": 6, "state_shape": 6, "episode_limit": 25}


def episodes(E, seed=0, lengths=None, rewards=None):
    """Arrays {field: [E, T+1, ...]} of E valid episodes (lengths in 2..25 transitions by default)."""
    rng = np.random.default_rng(seed)
    T1 = INFO["episode_limit"] + 1
    lengths = rng.integers(2, T1, size=E) if lengths is None else np.asarray(lengths)
    steps = np.arange(T1)
    filled = (steps[None] <= lengths[:, None]).astype(np.uint8)[..., None]
    transition = (steps[None] < lengths[:, None])[..., None]
    reward = (rng.integers(-3, 4, size=(E, T1, 1)) if rewards is None else rewards).astype(np.float32) * transition
    return {"obs": rng.random((E, T1, 2, 6), dtype=np.float32) * filled[..., None],
            "state": rng.random((E, T1, 6), dtype=np.float32) * filled,
            "actions": rng.integers(0, 3, size=(E, T1, 2, 1)) * filled[..., None],
            "avail_actions": np.ones((E, T1, 2, 3), dtype=np.uint8),
            "reward": reward, "terminated": np.zeros((E, T1, 1), dtype=np.uint8), "filled": filled}


def write_dataset(path, E=40, seed=0, qualities=None, returns=None, **kw):
    """A dataset file of E synthetic episodes; qualities: names [E, 2] (default: the first fifth expert, the rest
    poor, as MisoDICE's mixture)."""
    if qualities is None:
        qualities = np.array([["expert", "expert"] if i < E // 5 else ["poor", "poor"] for i in range(E)])
    arrays = episodes(E, seed, **kw)
    with DatasetWriter(path, INFO, "matrix_game", ENV_ARGS, {"env": "matrix_game"}) as w:
        w.add_arrays(arrays, qualities=qualities, returns=returns)
    return str(path)
