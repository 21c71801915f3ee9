"""Every env describes its state, actions and reward; the state schema must tile the state exactly."""
import numpy as np
import pytest

from envs import make_env
from envs.description import Field, check_schema, render_state

ENVS = [
    ("matrix_game", {"game": "penalty"}),
    ("matrix_game", {"game": "climbing", "episode_limit": 3}),
    ("gymma", {"key": "lbforaging:Foraging-5x5-2p-1f-v3", "time_limit": 50}),
    ("gymma", {"key": "lbforaging:Foraging-8x8-2p-2f-coop-v3", "time_limit": 50}),
    ("gymma", {"key": "lbforaging:Foraging-2s-8x8-3p-2f-v3", "time_limit": 50}),
]


@pytest.mark.parametrize("name,env_args", ENVS)
def test_every_env_describes_itself(name, env_args):
    env = make_env(name, seed=0, **env_args)
    env.reset()
    schema = env.state_schema()
    check_schema(schema, env.get_state_size())
    assert len({f.name for f in schema}) == len(schema)
    assert all(f.meaning for f in schema)
    assert len(env.action_meanings()) == env.get_total_actions()
    assert len(env.reward_description()) > 40
    text = env.describe_state()
    assert text.count("\n") == len(schema) - 1
    seg = env.describe_segment([env.get_state()] * 2, [[0] * env.n_agents] * 2, [0.0, 1.0])
    assert seg.count("step ") == 2 and env.action_meanings()[0] in seg


def test_check_schema_names_gaps_and_overlaps():
    with pytest.raises(ValueError, match=r"uncovered indices \[2\]"):
        check_schema([Field("a", 0, 2, "x"), Field("b", 3, 4, "y")], 4)
    with pytest.raises(ValueError, match=r"several fields \[1\]"):
        check_schema([Field("a", 0, 2, "x"), Field("b", 1, 3, "y")], 3)
    with pytest.raises(ValueError, match="outside the state"):
        check_schema([Field("a", 0, 5, "x")], 3)


def test_matrix_game_fields_hold_the_last_joint_action():
    env = make_env("matrix_game", game="climbing")
    env.reset()
    env.step([1, 2])
    fields = {f.name: f for f in env.state_schema()}
    state = env.get_state()
    a0, a1 = fields["agent_0_last_action"], fields["agent_1_last_action"]
    assert state[a0.start:a0.end].tolist() == [0, 1, 0] and state[a1.start:a1.end].tolist() == [0, 0, 1]
    assert "agent_0_last_action = [0, 1, 0]" in render_state(env.state_schema(), state)


def test_lbf_fields_match_the_game_state():
    env = make_env("gymma", key="lbforaging:Foraging-8x8-3p-3f-v3", time_limit=50, seed=3)
    env.reset()
    game = env._unwrapped
    fields = {f.name: f for f in env.state_schema()}
    state = env.get_state()
    rng = np.random.default_rng(0)
    for _ in range(10):  # move around a bit so positions are not the initial ones
        avail = env.get_avail_actions()
        env.step([rng.choice(np.flatnonzero(a)) for a in avail])
    state = env.get_state()
    food = [(r, c, game.field[r, c]) for r, c in zip(*np.nonzero(game.field))]
    for i, player in enumerate(game.players):
        me = fields[f"agent_{i}_view.player_0"]
        assert tuple(state[me.start:me.end]) == (*player.position, player.level)
        seen = [tuple(state[fields[f"agent_{i}_view.food_{j}"].start:fields[f"agent_{i}_view.food_{j}"].end])
                for j in range(game.max_num_food)]
        assert seen[:len(food)] == [tuple(float(x) for x in f) for f in food]
        assert all(s == (-1, -1, 0) for s in seen[len(food):])
