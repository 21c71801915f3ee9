"""LBF with QLLM's global state: the layout the prompt describes is the layout the env produces."""
import re

import numpy as np
import pytest

from envs import make_env
from envs.description import check_schema

COOP = "Foraging-8x8-2p-2f-coop-v3"


def lbf(key=COOP, **kw):
    env = make_env("lbf", key=key, seed=kw.pop("seed", 0), **kw)
    env.reset()
    return env


def prompt_ranges(prompt):
    """field name -> (start, end) as the task prompt states them."""
    return {m[3]: (int(m[1]), int(m[2])) for m in re.finditer(r"state\[(\d+):(\d+)\] (\S+):", prompt)}


def changed(before, after):
    return np.flatnonzero(before != after).tolist()


def empty_cell(game):
    taken = {p.position for p in game.players}
    for r, c in zip(*np.nonzero(game.field == 0)):
        if (r, c) not in taken and all(abs(r - fr) + abs(c - fc) > 1 for fr, fc in zip(*np.nonzero(game.field))):
            return int(r), int(c)
    raise AssertionError("no empty cell")


def test_state_holds_agents_food_and_last_actions():
    env = lbf()
    game = env._unwrapped
    state = env.get_state()
    assert state.shape == (14,) and env.get_state_size() == 14 and state.dtype == np.float32
    for i, p in enumerate(game.players):
        assert tuple(state[3 * i:3 * i + 3]) == (*p.position, p.level)
    foods = [(r, c, game.field[r, c]) for r, c in zip(*np.nonzero(game.field))]
    assert [tuple(state[6 + 3 * j:9 + 3 * j]) for j in range(2)] == foods
    assert state[12:].tolist() == [-1, -1]
    env.step([0, 0])
    assert env.get_state()[12:].tolist() == [0, 0]


def test_last_actions_are_minus_one_at_the_start_of_every_episode():
    env = lbf()
    for _ in range(3):
        _, state = env.reset()
        assert state[-2:].tolist() == [-1, -1]
        env.step([0, 0])
        assert env.get_state()[-2:].tolist() == [0, 0]


def test_picked_food_becomes_minus_one_and_the_others_keep_their_slots():
    env = lbf(key="Foraging-8x8-2p-2f-v3", seed=1)
    game = env._unwrapped
    (r0, c0), (r1, c1) = env._foods
    before = env.get_state()
    game.field[r0, c0] = 0  # food 0 collected
    after = env.get_state()
    assert after[6:9].tolist() == [-1, -1, 0]
    assert after[9:12].tolist() == [r1, c1, game.field[r1, c1]]
    assert changed(before, after) == [6, 7, 8]


def test_state_obs_layout_is_the_concatenated_observations():
    env = lbf(state="obs")
    obs = np.stack(env.get_obs())
    assert env.get_state().tolist() == obs.reshape(-1).tolist()
    check_schema(env.state_schema(), env.get_state_size())
    with pytest.raises(ValueError, match="state must be one of"):
        make_env("lbf", key=COOP, state="pixels")
    with pytest.raises(ValueError, match="not a Level-Based Foraging env"):
        make_env("lbf", key="gymnasium:CartPole-v1")


def test_task_prompt_matches_the_state_the_env_produces():
    """Perturb the game one schema field at a time: exactly the prompt's indices change, in the stated order."""
    env = lbf()
    game = env._unwrapped
    prompt = env.describe_task()
    ranges = prompt_ranges(prompt)
    assert set(ranges) == {"agent_0", "agent_1", "food_0", "food_1", "last_actions"}
    assert "14 numbers" in prompt and "8x8 grid with 2 agents and 2 food" in prompt
    for k, meaning in enumerate(env.action_meanings()):
        assert f"{k}: {meaning}" in prompt

    for i, player in enumerate(game.players):
        before = env.get_state()
        row, col = empty_cell(game)
        player.position, player.level = (row, col), player.level + 1
        a, b = ranges[f"agent_{i}"]
        after = env.get_state()
        assert changed(before, after) == list(range(a, b))
        assert after[a:b].tolist() == [row, col, player.level]  # "(row, column, level)"
    for j, (r, c) in enumerate(env._foods):
        before = env.get_state()
        game.field[r, c] += 2
        a, b = ranges[f"food_{j}"]
        after = env.get_state()
        assert changed(before, after) == [b - 1]  # the level, the third value
        assert after[a:b].tolist() == [r, c, game.field[r, c]]
    before = env.get_state()
    game._gen_valid_moves()
    env.step([0, 0])  # both stay: only the last actions change
    a, b = ranges["last_actions"]
    assert changed(before, env.get_state()) == list(range(a, b))


@pytest.mark.parametrize("key,n_agents,state_size", [
    ("Foraging-2s-8x8-2p-2f-coop-v3", 2, 14),
    ("Foraging-2s-10x10-3p-3f-v3", 3, 21),
    ("Foraging-2s-15x15-4p-3f-v3", 4, 25),
])
def test_paper_tasks_have_the_papers_state_sizes(key, n_agents, state_size):
    env = lbf(key=key)
    assert env.n_agents == n_agents and env.get_state_size() == state_size  # QLLM paper, Table 1
    check_schema(env.state_schema(), state_size)
    assert "5x5 square" in env.task_summary()


def test_describe_state_draws_the_grid():
    env = lbf()
    state = env.get_state()
    text = env.describe_state(state)
    lines = text.splitlines()
    grid = lines[-8:]
    (r0, c0, _), (r1, c1, _) = state[0:3].astype(int), state[3:6].astype(int)
    assert grid[r0].split()[c0] == "A0" and grid[r1].split()[c1] == "A1"
    fr, fc, fl = state[6:9].astype(int)
    assert grid[fr].split()[fc] == f"F{fl}"
    assert "agent_0 = [" in text and "last_actions = [-1, -1]" in text


def test_edge_states_cover_picked_food_for_tfcaf_validation():
    from qllm.states import sample_states
    env = lbf()
    edges = env.edge_states()
    assert len(edges) == 2 * (env.n_food + 1)
    assert all(e.shape == (14,) for e in edges)
    assert edges[env.n_food][6:12].tolist() == [-1, -1, 0] * 2  # all food picked
    assert edges[-1][12:].tolist() == [-1, -1]  # ... at the first step of an episode
    states = sample_states("lbf", {"key": COOP, "time_limit": 20}, n=64, seed=0)
    assert (states[:, 6:9] == [-1, -1, 0]).all(axis=1).any()  # random play alone rarely collects food


def reference_state(game, slots, last_actions, n_food):
    """The `state: qllm` layout written out plainly: (row, col, level) per agent, per food slot (fixed at reset,
    row-major; (-1, -1, 0) once picked or never spawned), then the last actions."""
    state = []
    for p in game.players:
        state += [float(p.position[0]), float(p.position[1]), float(p.level)]
    for j in range(n_food):
        if j < len(slots) and game.field[slots[j]] > 0:
            r, c = slots[j]
            state += [float(r), float(c), float(game.field[r, c])]
        else:
            state += [-1.0, -1.0, 0.0]
    return np.array(state + [float(a) for a in last_actions], dtype=np.float32)


@pytest.mark.parametrize("key", ["Foraging-8x8-3p-2f-v3", "Foraging-5x5-2p-4f-v3"])  # the 5x5 map spawns 2 of 4 foods
def test_state_matches_a_plain_reference_bit_for_bit(key):
    env = make_env("lbf", key=key, seed=3)
    game, rng = env._unwrapped, np.random.default_rng(0)
    picked = padded = 0
    for _ in range(40):
        _, state = env.reset()
        slots = sorted(zip(*np.nonzero(game.field)))[: env.n_food]
        padded += len(slots) < env.n_food
        last, done = [-1] * env.n_agents, False
        while True:
            ref = reference_state(game, slots, last, env.n_food)
            assert state.dtype == ref.dtype and state.shape == ref.shape and state.tobytes() == ref.tobytes()
            if done:
                break
            last = [int(rng.choice(np.flatnonzero(a))) for a in env.get_avail_actions()]  # valid: food gets loaded
            _, terminated, info = env.step(last)
            state, done = env.get_state(), terminated or info.get("episode_limit", False)
        picked += sum(1 for s in slots if game.field[s] == 0)
    assert picked and (padded if "4f" in key else True)  # both the picked and the never-spawned slots were checked
