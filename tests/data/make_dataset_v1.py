"""How tests/data/dataset_v1.h5 was made: run once, at commit d50349e (before the offline/ package split), with
`PYTHONPATH=src .venv/bin/python tests/data/make_dataset_v1.py` from the repository root. The file is committed;
tests/offline/test_compat.py loads it with the current reader and checks the values below, so a dataset written
before the split keeps loading. Do not regenerate it with newer code: that would defeat its purpose."""
import os

import numpy as np


def arrays():
    """Three episodes, n=2 agents, 3 actions, obs 2, state 3, episode_limit 4: a terminal at transition 1
    (2 transitions), a time-limit end (4 transitions), a terminal at transition 2 (3 transitions)."""
    E, T1, n = 3, 5, 2
    lengths = [2, 4, 3]
    obs = np.arange(E * T1 * n * 2, dtype=np.float32).reshape(E, T1, n, 2) / 10
    state = np.arange(E * T1 * 3, dtype=np.float32).reshape(E, T1, 3) - 7
    actions = (np.arange(E * T1 * n).reshape(E, T1, n, 1) % 3).astype(np.int64)
    avail = np.ones((E, T1, n, 3), dtype=np.uint8)
    reward = np.zeros((E, T1, 1), dtype=np.float32)
    terminated = np.zeros((E, T1, 1), dtype=np.uint8)
    filled = np.zeros((E, T1, 1), dtype=np.uint8)
    for e, L in enumerate(lengths):
        filled[e, :L + 1] = 1
        reward[e, :L, 0] = np.arange(1, L + 1) * (e + 1)
        obs[e, L + 1:] = state[e, L + 1:] = actions[e, L + 1:] = 0
        if e != 1:
            terminated[e, L - 1] = 1
    return {"obs": obs, "state": state, "actions": actions, "avail_actions": avail, "reward": reward,
            "terminated": terminated, "filled": filled}


ENV_INFO = {"n_agents": 2, "n_actions": 3, "obs_shape": 2, "state_shape": 3, "episode_limit": 4}
QUALITIES = [["expert", "random"], ["medium", "medium"], ["novice", "expert"]]  # "novice": a writer-added code
LABELS = {"score": np.array([0.5, -1.0, 2.0], dtype=np.float32), "pair": np.array([[1, 0], [0, 1], [1, 1]])}

if __name__ == "__main__":
    from components.offline_dataset import DatasetWriter

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dataset_v1.h5")
    with DatasetWriter(out, ENV_INFO, "countdown", {"episode_limit": 4, "seed": 1}, {"env": "countdown", "seed": 1},
                       attrs={"note": "fixture"}) as w:
        w.add_arrays(arrays(), qualities=QUALITIES, labels=LABELS)
    print(out, os.path.getsize(out))
