"""MultiAgentEnv's reward settings, shared by every wrapper: the check of reward_scalarisation and the conversion of
per-agent or team rewards to what step() returns."""
import numpy as np
import pytest

from envs.multiagentenv import MultiAgentEnv


def env(common_reward=True, reward_scalarisation="sum", n_agents=3):
    e = MultiAgentEnv()
    e.n_agents = n_agents
    e.set_reward_settings("toy", common_reward, reward_scalarisation)
    return e


def test_an_unknown_scalarisation_names_the_env_and_the_value():
    with pytest.raises(ValueError, match=r"toy: reward_scalarisation must be 'sum' or 'mean', got 'max'"):
        env(reward_scalarisation="max")


@pytest.mark.parametrize("rewards", [[1.0, 2.0, 4.5], (1.0, 2.0, 4.5), np.array([1.0, 2.0, 4.5])])
def test_per_agent_rewards(rewards):
    assert env().scalarise_reward(rewards) == 7.5 and isinstance(env().scalarise_reward(rewards), float)
    assert env(reward_scalarisation="mean").scalarise_reward(rewards) == 2.5
    out = env(common_reward=False).scalarise_reward(rewards)
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.0, 4.5]


def test_a_team_reward_is_not_summed_and_goes_to_every_agent():
    for how in ("sum", "mean"):
        assert env(reward_scalarisation=how).scalarise_reward(np.float64(2.0)) == 2.0
    out = env(common_reward=False).scalarise_reward(2.0)
    assert out.dtype == np.float32 and out.tolist() == [2.0, 2.0, 2.0]


def test_sums_are_exactly_those_of_the_wrappers_before():
    # arrays: NumPy's (pairwise) sum, as pz_base and gfootball did; lists: Python's sum in order, as gymma did
    rng = np.random.default_rng(0)
    a = rng.normal(size=20) * 10.0 ** rng.integers(-3, 4, size=20)
    e = env(n_agents=20)
    assert e.scalarise_reward(a) == float(a.sum())
    assert e.scalarise_reward(a.tolist()) == float(sum(a.tolist()))
