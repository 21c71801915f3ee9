"""Pistonball behind the pymarl API: low-dim state/obs against the pymunk bodies, rewards,
terminal vs truncation, seeding and errors."""
import math
import os

import numpy as np
import pytest
import yaml

from envs import make_env
from envs.description import check_schema
from envs.pistonball import PistonballEnv

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config", "envs")


def fields_of(env):
    return {f.name: f for f in env.state_schema()}


def value(env, name):
    f = fields_of(env)[name]
    return env.get_state()[f.start:f.end]


def test_shapes_and_available_actions():
    env = make_env("pistonball", n_pistons=5, seed=0)
    obs, state = env.reset()
    assert env.get_env_info() == {"state_shape": 10, "obs_shape": 9, "n_actions": 3, "n_agents": 5,
                                  "episode_limit": 125}
    assert len(obs) == 5 and all(o.dtype == np.float32 and o.shape == (9,) for o in obs)
    assert state.dtype == np.float32 and state.shape == (10,)
    assert env.get_avail_actions() == [[1, 1, 1]] * 5
    reward, terminated, info = env.step([1] * 5)
    assert isinstance(reward, float) and terminated is False
    assert set(info) == {"ball_reached_wall", "success", "ball_progress"}
    assert make_env("pistonball", n_pistons=20).get_env_info()["state_shape"] == 25


def expected_state(env):
    raw = env._raw
    b = raw.ball
    heights = [(491 - p.position[1]) / 64 for p in raw.pistonList]  # 491: y of a piston at its lowest
    return np.array([(b.position[0] - 40) / (40 * env.n_pistons), (486 - (b.position[1] + 40)) / 64,
                     b.velocity[0] / 100, -b.velocity[1] / 100, b.angular_velocity / (6 * math.pi), *heights],
                    dtype=np.float32)


def test_state_fields_are_the_pymunk_bodies():
    env = make_env("pistonball", n_pistons=5, seed=1)
    env.reset()
    check_schema(env.state_schema(), env.get_state_size())
    rng = np.random.default_rng(0)
    for _ in range(15):
        env.step(rng.integers(0, 3, 5))
        np.testing.assert_allclose(env.get_state(), expected_state(env), rtol=1e-6, atol=1e-6)
    b = env._raw.ball
    assert value(env, "ball_x")[0] == pytest.approx((b.position[0] - 40) / 200, abs=1e-6)
    assert value(env, "ball_vx")[0] == pytest.approx(b.velocity[0] / 100, abs=1e-6)
    assert value(env, "ball_spin")[0] == pytest.approx(b.angular_velocity / (6 * math.pi), abs=1e-6)


def test_moving_a_piston_moves_its_field():
    env = make_env("pistonball", n_pistons=5, seed=2)
    env.reset()
    piston = env._raw.pistonList[3]
    start = value(env, "piston_3_height")[0]
    for k in range(1, 4):
        env.step([1, 1, 1, 2, 1])  # piston 3 up, the others stay
        assert value(env, "piston_3_height")[0] == pytest.approx(min(start + k / 16, 1.0))
        assert value(env, "piston_3_height")[0] == pytest.approx((491 - piston.position[1]) / 64)
    for _ in range(20):
        env.step([1, 1, 1, 0, 1])  # down to the bottom and no further
    assert value(env, "piston_3_height")[0] == 0.0 and piston.position[1] == 491
    for _ in range(20):
        env.step([1, 1, 1, 2, 1])
    assert value(env, "piston_3_height")[0] == 1.0 and piston.position[1] == 491 - 64


def test_observations_are_derived_from_the_state():
    env = make_env("pistonball", n_pistons=4, seed=3)
    env.reset()
    env.step([2, 0, 2, 0])
    s = env.get_state()
    heights, ball = s[5:], s[:5]
    obs = np.array(env.get_obs())
    np.testing.assert_array_equal(obs[:, 0], heights)
    np.testing.assert_array_equal(obs[:, 1], [-1, *heights[:3]])  # left neighbour, -1 at the wall
    np.testing.assert_array_equal(obs[:, 2], [*heights[1:], -1])
    np.testing.assert_allclose(obs[:, 3], (np.arange(4) + 0.5) / 4)
    bx = env._raw.ball.position[0]
    np.testing.assert_allclose(obs[:, 4], (bx - (40 + 40 * np.arange(4) + 20)) / 40, rtol=1e-6)
    np.testing.assert_array_equal(obs[:, 5:], np.tile(ball[1:], (4, 1)))


def test_dense_reward_is_pistonballs_and_the_wall_is_a_terminal():
    env = make_env("pistonball", n_pistons=5, seed=4, common_reward=False)
    env.reset()
    raw = env._raw
    d0 = raw.distance_to_wall_at_game_start
    prev = raw.ball_prev_pos
    rewards, terminated, info = env.step([1] * 5)
    assert not terminated
    expected = -(raw.ball_prev_pos - prev) * 100 / d0 - 0.1
    assert rewards.dtype == np.float32 and rewards.shape == (5,)
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)
    # put the ball against the left wall, rolling left: the next step is a real terminal, no time penalty
    prev = raw.ball_prev_pos
    raw.ball.position = (81, raw.ball.position[1])
    raw.ball.velocity = (-50, 0)
    rewards, terminated, info = env.step([1] * 5)
    assert terminated is True and "episode_limit" not in info and info["ball_reached_wall"] == 1
    np.testing.assert_allclose(rewards, -(40 - prev) * 100 / d0, rtol=1e-6)
    assert info["ball_progress"] == pytest.approx(1.0)


def test_team_reward_scalarisation_and_sparse_reward():
    total = make_env("pistonball", n_pistons=5, seed=5)
    mean = make_env("pistonball", n_pistons=5, seed=5, reward_scalarisation="mean")
    total.reset()
    mean.reset()
    for _ in range(3):
        r_sum, r_mean = total.step([2, 1, 0, 1, 2])[0], mean.step([2, 1, 0, 1, 2])[0]
        assert r_sum == pytest.approx(5 * r_mean)
    sparse = make_env("pistonball", n_pistons=5, seed=5, reward="sparse", time_penalty=-0.2)
    sparse.reset()
    assert sparse.step([1] * 5)[0] == pytest.approx(5 * -0.2)
    raw = sparse._raw
    raw.ball.position = (81, raw.ball.position[1])
    raw.ball.velocity = (-50, 0)
    reward, terminated, _ = sparse.step([1] * 5)
    assert terminated and reward == pytest.approx(5 * 1.0)
    assert "+1 on the step the ball reaches the left wall" in sparse.reward_description()


def test_time_limit_is_a_truncation():
    env = make_env("pistonball", n_pistons=5, max_cycles=6, seed=0)
    for _ in range(2):
        env.reset()
        for t in range(1, 7):
            _, terminated, info = env.step([1] * 5)
            assert terminated is False
            assert info.get("episode_limit", False) == (t == 6)


def test_seeded_episodes_are_reproducible():
    def rollout(seed):
        env = make_env("pistonball", n_pistons=5, seed=seed, max_cycles=10)
        rng = np.random.default_rng(0)
        trace = []
        for _ in range(2):  # later resets continue the RNG
            trace.append(env.reset()[1].tobytes())
            for _ in range(10):
                reward, _, _ = env.step(rng.integers(0, 3, 5))
                trace.append((reward, env.get_state().tobytes()))
        return trace

    a = rollout(9)
    assert a == rollout(9)
    assert a != rollout(10)
    assert a[0] != a[11]  # the second episode starts elsewhere


def test_descriptions():
    env = make_env("pistonball", n_pistons=5, seed=0)
    env.reset()
    assert env.action_meanings()[1] == "stay" and len(env.action_meanings()) == 3
    text = env.describe_state()
    assert text.count("|") == 2 * 5 and "ball: centre above piston" in text
    prompt = env.describe_task()
    assert "piston_4_height" in prompt and "LEFT wall" in prompt and "5 x r" in prompt
    assert len(env.obs_meanings()) == env.get_obs_size()


def test_errors():
    with pytest.raises(TypeError, match="unknown env argument 'continuous' for pistonball; valid: .*n_pistons"):
        make_env("pistonball", continuous=True)
    with pytest.raises(ValueError, match="reward must be one of"):
        make_env("pistonball", reward="shaped")
    with pytest.raises(ValueError, match="n_pistons"):
        make_env("pistonball", n_pistons=1)
    env = make_env("pistonball", n_pistons=3)
    env.reset()
    with pytest.raises(ValueError, match="0..2"):
        env.step([0, 1, 3])


def test_config_builds_the_env():
    with open(os.path.join(CONFIG_DIR, "pistonball.yaml")) as f:
        cfg = yaml.safe_load(f)
    env = make_env(cfg["env"], **cfg["env_args"], seed=0)
    assert isinstance(env, PistonballEnv) and env.n_agents == 5 and env.episode_limit == 125
