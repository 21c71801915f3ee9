"""Google Research Football behind the env API: the state is what the schema says, episodes end right.

An optional extra (./install.sh football); CI installs it, and there a missing package fails
these tests instead of skipping them.
"""
import re

import numpy as np
import pytest

from helpers import require_extra, run_without

require_extra("gfootball", "./install.sh football, or ./install_gfootball.sh")

from envs import make_env  # noqa: E402
from envs.description import check_schema, task_prompt  # noqa: E402
from envs.gfootball import OBS_SIZE  # noqa: E402

SCENARIOS = {  # scenario -> (agents, our players, opponents)
    "academy_3_vs_1_with_keeper": (4, 4, 2),
    "academy_counterattack_easy": (4, 11, 11),
    "academy_pass_and_shoot_with_keeper": (3, 3, 2),
}
SHOT, RIGHT, IDLE = 12, 5, 0


def football(scenario="academy_3_vs_1_with_keeper", **kw):
    kw.setdefault("time_limit", 30)
    kw.setdefault("seed", 0)
    return make_env("gfootball", scenario=scenario, **kw)


def field(env, name):
    (f,) = [f for f in env.state_schema() if f.name == name]
    return slice(f.start, f.end)


def play(env, policy, rng=None):
    """One episode; returns the rewards, the last step's outcome and the states."""
    _, state = env.reset()
    rewards, states = [], [state.copy()]
    for t in range(env.episode_limit):
        reward, terminated, info = env.step(policy(t, rng))
        rewards.append(reward)
        states.append(env.get_state().copy())
        if terminated or info.get("episode_limit"):
            return rewards, terminated, info, states
    raise AssertionError("the episode did not end by the time limit")


def random_policy(n_agents):
    return lambda t, rng: rng.integers(0, 19, n_agents).tolist()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_shapes_schema_and_a_random_episode(scenario):
    n_agents, n_left, n_right = SCENARIOS[scenario]
    env = football(scenario)
    obs, state = env.reset()
    info = env.get_env_info()
    assert info == {"state_shape": n_agents * OBS_SIZE, "obs_shape": OBS_SIZE, "n_actions": 19,
                    "n_agents": n_agents, "episode_limit": 30}
    assert len(obs) == n_agents and all(o.shape == (OBS_SIZE,) and o.dtype == np.float32 for o in obs)
    assert state.dtype == np.float32 and state.tolist() == np.concatenate(obs).tolist()
    assert env.get_avail_actions() == [[1] * 19] * n_agents
    check_schema(env.state_schema(), env.get_state_size())
    assert len(env.action_meanings()) == 19 and env.action_meanings()[SHOT].startswith("shoot")
    # empty player slots are -1 padding
    assert (state[field(env, "agent_0.left_team_positions")][2 * n_left:] == -1).all()
    assert (state[field(env, "agent_0.right_team_positions")][2 * n_right:] == -1).all()
    rewards, terminated, info, _ = play(env, random_policy(n_agents), np.random.default_rng(1))
    assert all(isinstance(r, float) for r in rewards)
    assert set(info) <= {"score_reward", "goal", "episode_limit"} and info["goal"] in (0, 1)
    prompt = task_prompt(env)
    assert "state[0:22] agent_0.left_team_positions" in prompt and scenario in prompt
    assert "agent 0 controls our player" in env.describe_state()
    segment = env.describe_segment([state], [[SHOT] * n_agents], [0.5])
    assert "agent 0: shoot at the opponents' goal" in segment and "reward: 0.5" in segment


def test_one_controlled_player_keeps_the_agent_axis():
    """gfootball drops the agent axis when one player is controlled; get_obs is still [n_agents][115]."""
    env = football(n_agents=1)
    obs, state = env.reset()
    assert np.shape(obs) == (1, OBS_SIZE) and np.shape(env.get_obs_agent(0)) == (OBS_SIZE,)
    env.step([IDLE])
    assert np.shape(env.get_obs()) == (1, OBS_SIZE) and np.array_equal(env.get_obs_agent(0), env.get_state())
    env.close()


def test_fields_hold_the_game_values():
    env = football()
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(8):
        env.step(rng.integers(0, 19, 4).tolist())
        state, raws = env.get_state(), env._game.observation()
        raw = raws[0]
        for i in range(env.n_agents):
            a = f"agent_{i}."
            np.testing.assert_allclose(state[field(env, a + "left_team_positions")][:8], raw["left_team"].ravel(),
                                       rtol=1e-6)
            np.testing.assert_allclose(state[field(env, a + "left_team_directions")][:8],
                                       raw["left_team_direction"].ravel(), rtol=1e-6)
            np.testing.assert_allclose(state[field(env, a + "right_team_positions")][:4],
                                       raw["right_team"].ravel(), rtol=1e-6)
            np.testing.assert_allclose(state[field(env, a + "ball_position")], raw["ball"], rtol=1e-6)
            np.testing.assert_allclose(state[field(env, a + "ball_direction")], raw["ball_direction"], rtol=1e-6)
            assert np.argmax(state[field(env, a + "ball_owner")]) == raw["ball_owned_team"] + 1
            assert np.flatnonzero(state[field(env, a + "active_player")]).tolist() == [raws[i]["active"]]
            assert np.argmax(state[field(env, a + "game_mode")]) == raw["game_mode"]
        # the blocks repeat the game; only the controlled player differs (fixed: all our 4 players are agents)
        blocks = state.reshape(env.n_agents, OBS_SIZE)
        shared = np.r_[0:97, 108:OBS_SIZE]
        assert (blocks[:, shared] == blocks[0, shared]).all()
        assert [raw["active"] for raw in raws] == [0, 1, 2, 3]


def test_the_ball_starts_where_the_scenario_puts_it():
    env = football()
    _, state = env.reset()
    x, y, z = state[field(env, "agent_0.ball_position")]
    assert (x, y) == pytest.approx((0.62, 0.0), abs=0.02) and 0 < z < 0.5  # SetBallPosition(0.62, 0.0)
    # our player 1 (centre attacker) starts at (0.6, 0), the opponents' goalkeeper at (1, 0) (mirrored -1)
    assert state[2:4] == pytest.approx((0.6, 0.0), abs=0.02)
    assert state[44:46] == pytest.approx((1.0, 0.0), abs=0.02)


def test_time_limit_is_a_truncation():
    env = football(time_limit=3)
    env.reset()
    for t in range(3):
        reward, terminated, info = env.step([IDLE] * 4)
        assert not terminated and info.get("episode_limit", False) == (t == 2)


def run_and_shoot(env):
    """The ball carrier's agent runs right and shoots once past x = 0.7; the other agents idle."""
    shot = False

    def policy(t, rng):
        nonlocal shot
        raws = env._game.observation()
        actions = [IDLE] * env.n_agents
        ball = raws[0]
        if not shot and ball["ball_owned_team"] == 0:
            for i, raw in enumerate(raws):
                if raw["active"] == ball["ball_owned_player"]:
                    shot = ball["ball"][0] > 0.7
                    actions[i] = SHOT if shot else RIGHT
        return actions
    return policy


def scripted_episodes(seeds=range(20), **kwargs):
    """seed -> (team rewards, terminated, info) of the run-and-shoot episode."""
    env = football(time_limit=100, **kwargs)
    for seed in seeds:
        env.seed(seed)
        rewards, terminated, info, _ = play(env, run_and_shoot(env))
        yield seed, (rewards, terminated, info)


def test_a_goal_is_a_terminal_with_every_checkpoint_paid():
    goal_seed, (team, terminated, info) = next((s, out) for s, out in scripted_episodes() if out[2]["goal"])
    assert terminated and info == {"score_reward": 1, "goal": 1}
    # each of the 4 agents: +1 for the goal and all 10 checkpoints of 0.1 by the end -> 2.0 each
    assert sum(team) == pytest.approx(8.0)
    (_, (per_agent, *_)), = scripted_episodes([goal_seed], common_reward=False)
    assert np.sum(per_agent, axis=0) == pytest.approx([2.0] * 4)
    assert np.sum(per_agent, axis=1) == pytest.approx(team)
    (_, (mean, *_)), = scripted_episodes([goal_seed], reward_scalarisation="mean")
    assert mean == pytest.approx(np.asarray(team) / 4)
    (_, (scoring, *_)), = scripted_episodes([goal_seed], rewards="scoring")
    assert scoring == [0.0] * (len(scoring) - 1) + [4.0]


def test_a_missed_chance_is_a_terminal_without_a_goal():
    team, terminated, info = next(out for _, out in scripted_episodes() if not out[2]["goal"] and out[1])
    assert terminated and "episode_limit" not in info and info["score_reward"] == 0
    # only the ball carrier's agent collects checkpoints (0.1 each, at most 10) before the shot
    assert 0 < sum(team) <= 1.0 + 1e-6


def test_same_seed_same_episodes_and_later_resets_continue():
    runs = []
    for _ in range(2):
        env = football(seed=5)
        runs.append([play(env, random_policy(4), np.random.default_rng(2)) for _ in range(2)])
    for (r1, t1, i1, s1), (r2, t2, i2, s2) in zip(*runs):
        assert r1 == r2 and t1 == t2 and i1 == i2 and np.array_equal(s1, s2)
    # same actions, but the second episode draws a new engine seed: the opponents play differently
    (_, _, _, first), (_, _, _, second) = runs[0]
    assert np.array_equal(first[0], second[0])  # the scenario's fixed start
    assert len(first) != len(second) or not np.array_equal(first, second)


def test_bad_args_are_explained():
    with pytest.raises(ValueError, match="academy_3_vs_1_with_keeper"):
        football("academy_3v1")
    with pytest.raises(TypeError, match="valid: scenario, n_agents"):
        football(map_name="academy_3_vs_1_with_keeper")
    with pytest.raises(ValueError, match="n_agents must be 1..4"):
        football(n_agents=5)
    with pytest.raises(ValueError, match="rewards must be one of"):
        football(rewards="checkpoints")


def test_missing_gfootball_names_the_install_script():
    from envs.gfootball import gfootball_missing

    cause = ModuleNotFoundError("No module named 'gfootball'")
    with pytest.raises(ImportError, match=r"^gfootball is not installed: run ./install_gfootball.sh") as raised:
        raise gfootball_missing(cause)
    assert raised.value.__cause__ is cause and raised.value.__suppress_context__
    # and FootballEnv raises it where `import gfootball` fails (a Python without gfootball)
    proc = run_without("gfootball", "from envs.gfootball import FootballEnv\n"
                                    "try:\n    FootballEnv()\n"
                                    "except ImportError as e:\n    print(f'{e}|{e.__cause__!r}')")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"gfootball is not installed: run ./install_gfootball.sh.*\|ModuleNotFoundError\(\"No "
                        r"module named 'gfootball'\"\)", proc.stdout.strip()), proc.stdout
