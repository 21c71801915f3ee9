import os
import warnings

import gymnasium
import numpy as np
import pytest
import torch
import yaml
from lbforaging.foraging.environment import Action

from envs import make_env
from envs.gymma import GymmaWrapper

LBF = "lbforaging:Foraging-8x8-2p-2f-coop-v3"
LBF_SMALL = "lbforaging:Foraging-5x5-2p-1f-v3"
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config", "envs")


class HeteroEnv(gymnasium.Env):
    """Tiny env with heterogeneous agents and gymnasium-style truncation."""

    def __init__(self, end_at=3, end_by="truncated", scalar_reward=False):
        self.observation_space = gymnasium.spaces.Tuple((
            gymnasium.spaces.Box(-1, 1, shape=(3,)),
            gymnasium.spaces.Box(-1, 1, shape=(2, 2)),
            gymnasium.spaces.Discrete(5),
        ))
        self.action_space = gymnasium.spaces.Tuple(
            (gymnasium.spaces.Discrete(2), gymnasium.spaces.Discrete(4), gymnasium.spaces.Discrete(3)))
        self.end_at, self.end_by, self.scalar_reward = end_at, end_by, scalar_reward
        self.t = 0

    def _obs(self):
        return (np.full(3, 0.5, np.float32), np.full((2, 2), -0.5, np.float32), self.t % 5)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, actions):
        self.t += 1
        end = self.t >= self.end_at
        reward = 4.0 if self.scalar_reward else [1.0, 3.0, 2.0]
        info = {"score": 1.5, "flag": True, "name": "x", "vec": np.zeros(2)}
        terminated = [end] * 3 if self.end_by == "terminated" else False
        return self._obs(), reward, terminated, end and self.end_by == "truncated", info


if "GymmaTestHetero-v0" not in gymnasium.registry:
    gymnasium.register(id="GymmaTestHetero-v0", entry_point=HeteroEnv)


def valid_random_actions(env, rng):
    return [int(rng.choice(np.flatnonzero(a))) for a in env.get_avail_actions()]


def run_episode(env, rng, policy=valid_random_actions):
    """Returns obs list, rewards, and (terminated, info) of every step."""
    obs, _ = env.reset()
    obs_seq, rewards, ends = [obs], [], []
    while True:
        reward, terminated, info = env.step(policy(env, rng))
        obs_seq.append(env.get_obs())
        rewards.append(reward)
        ends.append((terminated, info))
        if terminated or info.get("episode_limit", False):
            return obs_seq, rewards, ends


def test_api_contract():
    env = GymmaWrapper(key=LBF, time_limit=50, seed=0)
    info = env.get_env_info()
    assert info == {"state_shape": 24, "obs_shape": 12, "n_actions": 6, "n_agents": 2, "episode_limit": 50}
    obs, state = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert len(obs) == env.n_agents
        assert all(o.dtype == np.float32 and o.shape == (info["obs_shape"],) for o in obs)
        assert state.dtype == np.float32 and state.shape == (info["state_shape"],)
        np.testing.assert_array_equal(state, np.concatenate(obs))
        avail = env.get_avail_actions()
        assert np.array(avail).shape == (info["n_agents"], info["n_actions"])
        assert set(np.unique(avail)) <= {0, 1}
        reward, terminated, _ = env.step(valid_random_actions(env, rng))
        assert isinstance(reward, float) and isinstance(terminated, bool)
        obs, state = env.get_obs(), env.get_state()
    env.close()


def test_registry_and_action_types():
    env = make_env("gymma", key=LBF, time_limit=5, seed=0)
    env.reset()
    env.step(np.array([0, 1]))
    env.step(torch.tensor([2, 0]))
    env.step((np.int64(0), np.int64(0)))


def test_random_episodes_end_once():
    env = GymmaWrapper(key=LBF_SMALL, time_limit=25, seed=1)
    rng = np.random.default_rng(1)
    for _ in range(20):
        _, _, ends = run_episode(env, rng)
        assert len(ends) <= 25
        for terminated, info in ends[:-1]:
            assert not terminated and "episode_limit" not in info
        terminated, info = ends[-1]
        assert terminated != info.get("episode_limit", False)  # exactly one
        assert info.get("episode_limit", False) == (len(ends) == 25)


@pytest.mark.parametrize("time_limit", [10, 50, 60])  # below, at and above LBF's registered 50
def test_time_limit_is_truncation(time_limit):
    env = GymmaWrapper(key=LBF, time_limit=time_limit, seed=0)
    env.reset()
    for t in range(1, time_limit + 1):
        _, terminated, info = env.step([0, 0])  # NONE: no food is ever collected
        assert terminated is False
        assert info.get("episode_limit", False) == (t == time_limit)


def test_a_time_limit_above_the_registered_length_is_said_with_epymarls():
    """epymarl's gymma ends LBF's episodes at its registered 50 whatever time_limit; here time_limit does, said."""
    from envs import env_config_notes

    (note,) = env_config_notes("gymma", {"key": LBF, "time_limit": 100})
    assert "registers 50 steps per episode, where epymarl's gymma ends its episodes" in note
    assert "For epymarl's episode length give env_args.time_limit=50" in note
    assert env_config_notes("gymma", {"key": LBF, "time_limit": 50}) == []
    assert env_config_notes("lbf", {"key": LBF, "time_limit": 100}) == []  # its own config: no epymarl to match
    assert env_config_notes("matrix_game", {"game": "climbing"}) == []


def load_when_adjacent(env, rng):
    """Random walk that always loads next to food: LBF episodes often end by collecting it."""
    return [5 if a[5] else int(rng.choice(np.flatnonzero(a[:5]))) for a in env.get_avail_actions()]


def test_true_terminal_is_terminated():
    """Unmanipulated LBF: terminated <=> all food gone; reaching time_limit <=> episode_limit."""
    env = GymmaWrapper(key=LBF_SMALL, time_limit=30, seed=3)
    rng = np.random.default_rng(3)
    n_terminals = 0
    for _ in range(30):
        _, _, ends = run_episode(env, rng, load_when_adjacent)
        terminated, info = ends[-1]
        food_left = env._unwrapped.field.sum()
        if terminated:
            n_terminals += 1
            assert food_left == 0 and "episode_limit" not in info and len(ends) <= 30
        else:
            assert food_left > 0 and info["episode_limit"] and len(ends) == 30
    assert n_terminals > 0


def test_terminal_on_last_step_is_terminal():
    """Replay an episode that collects the food at step k with time_limit=k: still a terminal."""
    rng = np.random.default_rng(5)
    env = GymmaWrapper(key=LBF_SMALL, time_limit=50, seed=5)
    n_before = 0
    while True:
        policy_state = rng.bit_generator.state
        _, rewards, ends = run_episode(env, rng, load_when_adjacent)
        if ends[-1][0] and len(ends) > 1:
            break
        n_before += 1
        assert n_before < 50, "no terminal episode found"
    k = len(ends)
    # LBF's resets alone drive its RNG, so after n_before resets the replay starts from the same map
    env = GymmaWrapper(key=LBF_SMALL, time_limit=k, seed=5)
    for _ in range(n_before):
        env.reset()
    rng.bit_generator.state = policy_state
    _, replay_rewards, replay = run_episode(env, rng, load_when_adjacent)
    assert replay_rewards == rewards
    terminated, info = replay[-1]
    assert terminated is True and "episode_limit" not in info
    assert all(not t and "episode_limit" not in i for t, i in replay[:-1])


def place_food_next_to_agent0(env):
    u = env._unwrapped
    u.field[:] = 0
    u.field[2, 2] = 1
    u._food_spawned = 1.0
    for p, pos in zip(u.players, [(2, 1), (0, 4)], strict=True):
        p.position, p.level = pos, 1
    u._gen_valid_moves()


@pytest.mark.parametrize("time_limit", [1, 5])
def test_manipulated_terminal(time_limit):
    env = GymmaWrapper(key=LBF_SMALL, time_limit=time_limit, seed=0)
    env.reset()
    place_food_next_to_agent0(env)
    assert env.get_avail_agent_actions(0) == [1, 1, 1, 1, 0, 1]  # EAST is the food, LOAD is possible
    assert env.get_avail_agent_actions(1)[5] == 0
    reward, terminated, info = env.step([5, 0])
    assert terminated is True and "episode_limit" not in info
    assert reward == 1.0


@pytest.mark.parametrize("scalarisation,expected", [("sum", 1.0), ("mean", 0.5)])
def test_lbf_common_reward(scalarisation, expected):
    env = GymmaWrapper(key=LBF_SMALL, time_limit=5, seed=0, reward_scalarisation=scalarisation)
    env.reset()
    place_food_next_to_agent0(env)
    assert env.step([5, 0])[0] == expected

    env = GymmaWrapper(key=LBF_SMALL, time_limit=5, seed=0, common_reward=False)
    env.reset()
    place_food_next_to_agent0(env)
    reward = env.step([5, 0])[0]
    assert reward.dtype == np.float32
    np.testing.assert_array_equal(reward, [1.0, 0.0])


def test_avail_actions_match_lbf_valid_actions():
    env = GymmaWrapper(key=LBF, time_limit=50, seed=2)
    rng = np.random.default_rng(2)
    env.reset()
    u = env._unwrapped
    masked = 0
    for _ in range(50):
        avail = env.get_avail_actions()
        expected = [[int(a in u._valid_actions[p]) for a in Action] for p in u.players]
        assert avail == expected
        assert [env.get_avail_agent_actions(i) for i in range(env.n_agents)] == expected
        masked += sum(row.count(0) for row in avail)
        _, terminated, info = env.step(valid_random_actions(env, rng))
        if terminated or info.get("episode_limit"):
            env.reset()
    assert masked > 0


def record(env, n_episodes=3):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n_episodes):
        obs_seq, rewards, _ = run_episode(env, rng)
        out.append((np.array(obs_seq), np.array(rewards)))
    return out


def same(a, b):
    return len(a) == len(b) and all(
        oa.shape == ob.shape and (oa == ob).all() and ra.shape == rb.shape and (ra == rb).all()
        for (oa, ra), (ob, rb) in zip(a, b, strict=True))


def test_seeding_reproduces_episodes():
    first = record(GymmaWrapper(key=LBF, time_limit=20, seed=7))
    assert same(first, record(GymmaWrapper(key=LBF, time_limit=20, seed=7)))
    assert not same(first, record(GymmaWrapper(key=LBF, time_limit=20, seed=8)))
    # later resets continue the RNG instead of replaying the first episode
    assert not (first[0][0][0] == first[1][0][0]).all()
    env = GymmaWrapper(key=LBF, time_limit=20)
    env.seed(7)
    assert same(first, record(env))


def test_heterogeneous_padding_and_truncation():
    env = GymmaWrapper(key="GymmaTestHetero-v0", time_limit=10, end_at=3)
    assert env.get_env_info() == {"state_shape": 15, "obs_shape": 5, "n_actions": 4, "n_agents": 3,
                                  "episode_limit": 10}
    obs, state = env.reset()
    np.testing.assert_array_equal(obs[0], [0.5, 0.5, 0.5, 0, 0])
    np.testing.assert_array_equal(obs[1], [-0.5] * 4 + [0])
    np.testing.assert_array_equal(obs[2], [1, 0, 0, 0, 0])  # Discrete obs is one-hot
    np.testing.assert_array_equal(state, np.concatenate(obs))
    assert env.get_avail_actions() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]]
    for t in range(1, 4):
        reward, terminated, info = env.step([1, 3, 2])
        assert reward == 6.0 and terminated is False
        assert info.get("episode_limit", False) == (t == 3)  # gymnasium truncated=True
        assert info["score"] == 1.5 and info["flag"] is True and "name" not in info and "vec" not in info
    np.testing.assert_array_equal(env.get_obs()[2], [0, 0, 0, 1, 0])


def test_per_agent_terminated_lists_and_scalar_rewards():
    env = GymmaWrapper(key="GymmaTestHetero-v0", time_limit=2, end_at=2, end_by="terminated")
    env.reset()
    assert env.step([0, 0, 0])[1] is False
    _, terminated, info = env.step([0, 0, 0])
    assert terminated is True and "episode_limit" not in info  # terminal on the last step

    env = GymmaWrapper(key="GymmaTestHetero-v0", common_reward=False, scalar_reward=True)
    env.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reward = env.step([0, 0, 0])[0]
    assert caught and reward.dtype == np.float32
    np.testing.assert_array_equal(reward, [4.0] * 3)
    env = GymmaWrapper(key="GymmaTestHetero-v0", reward_scalarisation="mean")
    env.reset()
    assert env.step([0, 0, 0])[0] == 2.0


def test_errors():
    with pytest.raises(ValueError, match="env_args.key"):
        GymmaWrapper(time_limit=10)
    with pytest.raises(ValueError, match="Foraging-8x8-2p-2f-coop-v3"):
        GymmaWrapper(key="lbforaging:Foraging-8x8-2p-2f-coop-v4")
    with pytest.raises(ValueError, match="does not know env id"):
        GymmaWrapper(key="NoSuchEnvAtAll-v0")
    with pytest.raises(ValueError, match="cannot import module"):
        GymmaWrapper(key="no_such_module_xyz:Foo-v0")
    with pytest.raises(ValueError, match="pretrained_wrapper"):
        GymmaWrapper(key=LBF, pretrained_wrapper="PretrainedTag")
    with pytest.raises(ValueError, match="reward_scalarisation"):
        GymmaWrapper(key=LBF, reward_scalarisation="max")
    with pytest.raises(ValueError, match="time_limit"):
        GymmaWrapper(key=LBF, max_episode_steps=10)
    with pytest.raises(ValueError, match="Tuple"):
        GymmaWrapper(key="CartPole-v1")


def test_configs():
    with open(os.path.join(CONFIG_DIR, "lbf.yaml")) as f:
        cfg = yaml.safe_load(f)
    env = make_env(cfg["env"], **cfg["env_args"])
    assert env.episode_limit == 50 and env.n_agents == 2
    with open(os.path.join(CONFIG_DIR, "gymma.yaml")) as f:
        cfg = yaml.safe_load(f)
    with pytest.raises(ValueError, match="env_args.key"):
        make_env(cfg["env"], **cfg["env_args"])
