import os

import numpy as np
import pytest
import yaml

from envs import make_env
from envs.matrix_game import PAYOFFS, MatrixGame

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config", "envs")


@pytest.mark.parametrize("game", ["climbing", "penalty"])
def test_payoffs(game):
    env = MatrixGame(game=game, penalty=-50)
    env.reset()
    for a0 in range(3):
        for a1 in range(3):
            expected = PAYOFFS[game][a0][a1]
            expected = -50 if expected is None else expected
            reward, terminated, _ = env.step([a0, a1])
            assert isinstance(reward, float)
            assert reward == expected
            assert terminated is False


def test_known_optima():
    assert MatrixGame(game="climbing").payoff.max() == 11
    env = MatrixGame(game="penalty")
    assert env.payoff[0, 2] == env.payoff[2, 0] == 10
    assert env.payoff[0, 0] == env.payoff[2, 2] == -100


def test_state_is_one_hot_of_last_joint_action():
    env = MatrixGame(game="penalty")
    info = env.get_env_info()
    obs, state = env.reset()
    assert info == {"state_shape": 6, "obs_shape": 6, "n_actions": 3, "n_agents": 2, "episode_limit": 25}
    assert state.dtype == np.float32 and state.shape == (6,)
    assert not state.any()
    assert len(obs) == 2 and all(not o.any() for o in obs)
    for a0, a1 in [(0, 2), (1, 1), (2, 0)]:
        env.step(np.array([a0, a1]))
        expected = np.zeros(6, dtype=np.float32)
        expected[a0] = expected[3 + a1] = 1
        np.testing.assert_array_equal(env.get_state(), expected)
        for o in env.get_obs():
            np.testing.assert_array_equal(o, expected)
    assert env.get_avail_actions() == [[1, 1, 1], [1, 1, 1]]
    _, state = env.reset()
    assert not state.any()


def test_episode_limit_is_truncation():
    env = MatrixGame(game="climbing", episode_limit=7)
    for _ in range(2):  # a reset starts the count again
        env.reset()
        for t in range(1, 8):
            _, terminated, info = env.step([0, 0])
            assert terminated is False
            assert info.get("episode_limit", False) == (t == 7)


def test_errors():
    with pytest.raises(ValueError, match="env_args.game for matrix_game must be one of climbing, penalty; got "
                                         "'prisoners'"):
        MatrixGame(game="prisoners")
    with pytest.raises(TypeError, match="unknown env argument 'foo' for matrix_game"):
        MatrixGame(game="penalty", foo=1)
    with pytest.raises(TypeError, match="valid: game, episode_limit, penalty; did you mean 'episode_limit'"):
        MatrixGame(episode_limt=3)


@pytest.mark.parametrize("name,game", [("matrix_game", "penalty"), ("climbing", "climbing"), ("penalty", "penalty")])
def test_configs_build_the_env(name, game):
    with open(os.path.join(CONFIG_DIR, f"{name}.yaml")) as f:
        cfg = yaml.safe_load(f)
    env = make_env(cfg["env"], **cfg["env_args"])
    assert isinstance(env, MatrixGame) and env.game == game
    assert env.episode_limit == cfg["env_args"]["episode_limit"]


@pytest.mark.parametrize("args, message", [
    ({"episode_limit": 0}, "env_args.episode_limit for matrix_game must be an integer >= 1 (steps per episode); got 0"),
    ({"episode_limit": -5}, "got -5"), ({"episode_limit": "abc"}, "got 'abc'"), ({"episode_limit": True}, "got True"),
    ({"episode_limit": 2.5}, "got 2.5"), ({"game": "chicken"}, "env_args.game for matrix_game must be one of"),
    ({"penalty": "big"}, "env_args.penalty for matrix_game must be a number"),
])
def test_argument_values_are_checked_before_the_env_is_built(args, message):
    """check_env_args (src/main.py's preflight) and the constructor refuse them alike, naming argument and value."""
    from envs import check_env_args
    from envs.multiagentenv import EnvValueError

    with pytest.raises(EnvValueError) as e:
        check_env_args("matrix_game", args)
    assert message in str(e.value)
    with pytest.raises(EnvValueError):
        MatrixGame(**args)
    check_env_args("matrix_game", {"episode_limit": 1, "game": "climbing", "penalty": -12.5})
