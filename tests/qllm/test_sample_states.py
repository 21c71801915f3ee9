"""States for validation come from real env rollouts, include episode starts and ends, and are reproducible."""
import numpy as np

from envs import REGISTRY as env_REGISTRY
from helpers import CountdownEnv
from qllm.states import sample_states, sample_states_and_info


def test_matrix_game_states_are_reproducible_and_cover_starts():
    a = sample_states("matrix_game", {"game": "climbing", "episode_limit": 5}, n=100, seed=1)
    b = sample_states("matrix_game", {"game": "climbing", "episode_limit": 5}, n=100, seed=1)
    c = sample_states("matrix_game", {"game": "climbing", "episode_limit": 5}, n=100, seed=2)
    assert a.dtype == np.float32 and a.shape == (100, 6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (a.sum(1) == 0).any()  # first step: no joint action yet
    assert set(np.unique(a.sum(1))) <= {0.0, 2.0}  # otherwise a one-hot per agent


class EdgeCountdown(CountdownEnv):
    def edge_states(self):
        return [np.array([-99.0], dtype=np.float32)]


def test_first_last_and_edge_states_are_included():
    env_REGISTRY["edge_countdown"] = EdgeCountdown
    try:
        states, info = sample_states_and_info("edge_countdown", {"episode_limit": 6}, n=40, seed=0)
    finally:
        del env_REGISTRY["edge_countdown"]
    values = set(states[:, 0].tolist())
    assert {0.0, 6.0, -99.0} <= values  # reset state, time-limit state, the env's edge case
    assert info["n_agents"] == 2 and info["state_size"] == 1 and info["episodes"] >= 4


def test_lbf_states():
    states = sample_states("lbf", {"key": "Foraging-8x8-2p-2f-coop-v3", "time_limit": 20, "state": "qllm"}, n=64)
    assert states.shape == (64, 14) and np.isfinite(states).all()
