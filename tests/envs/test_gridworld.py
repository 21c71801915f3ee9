"""LCA grid worlds: scripted solutions, rewards, roles, masks, truncation, seeding, schema, text, oracle."""
import math
import os

import numpy as np
import pytest
import yaml

from envs import make_env
from envs.description import check_schema
from envs.gridworld import DOWN, INTERACT, LEFT, RIGHT, STAY, UP, TwoSwitchEnv, VictimRubbleEnv

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config", "envs")
FACING = {UP: 0, DOWN: 1, LEFT: 2, RIGHT: 3}

# Two-Switch from agent 0 at (2,6) and agent 1 at (6,6): each triggers its switch, agent 1 walks home
TS_START = [((2, 6), UP), ((6, 6), UP)]
TS_PLAN = ([LEFT, UP, INTERACT] + [STAY] * 8,
           [UP, RIGHT, INTERACT, DOWN, DOWN, LEFT, LEFT, DOWN, DOWN, DOWN, DOWN])
# Victim-Rubble from green (4,8) and orange (6,2): orange clears the passage to Victim2, green heals Victim1
# meanwhile, then Victim2; orange clears the harmless rubble last
VR_START = [((4, 8), UP), ((6, 2), DOWN)]
VR_PLAN = ([LEFT, LEFT, LEFT, UP, INTERACT] + [RIGHT] * 3 + [DOWN] * 7 + [RIGHT] * 5 + [UP] * 7
           + [INTERACT],
           [DOWN, RIGHT, INTERACT, RIGHT, UP, RIGHT, INTERACT, DOWN, LEFT, LEFT] + [UP] * 5 + [LEFT] * 4
           + [DOWN, LEFT, INTERACT] + [STAY] * 6)


def fields(env):
    return {f.name: f for f in env.state_schema()}


def place(env, starts):
    """Put agent i at starts[i] = ((x, y), facing action) through the public state vector."""
    state, f = env.get_state(), fields(env)
    for i, (cell, facing) in enumerate(starts):
        pos, face = f[f"agent_{i}_position"], f[f"agent_{i}_facing"]
        state[pos.start:pos.end] = cell
        state[face.start:face.end] = np.eye(4)[FACING[facing]]
    env.set_state(state)


def play(env, plan, check_masks=True):
    rewards, infos, terminals = [], [], []
    for acts in zip(*plan):
        if check_masks:
            avail = env.get_avail_actions()
            assert all(avail[i][a] for i, a in enumerate(acts)), (env._s.t, acts, avail)
        r, term, info = env.step(list(acts))
        rewards.append(r)
        infos.append(info)
        terminals.append(term)
    return rewards, terminals, infos


def test_two_switch_scripted_solution():
    env = TwoSwitchEnv(seed=0)
    env.reset()
    place(env, TS_START)
    rewards, terminals, infos = play(env, TS_PLAN)
    assert terminals == [False] * 10 + [True]
    assert infos[-1]["success"] == 1 and "episode_limit" not in infos[-1]
    assert infos[-1]["switches_triggered"] == 2 and infos[-1]["door_open"] == 1 and infos[-1]["events"] == 3
    assert infos[2]["events"] == 2 and infos[1]["events"] == 0
    assert rewards[2] == 2.0  # both switches at step 3
    assert rewards[-1] == pytest.approx(1 + 1 - 11 / 100)  # arrival home + success - n/n_max
    assert sum(rewards) == pytest.approx(4 - 11 / 100)
    assert env.subgoal_distance(0) == env.subgoal_distance(1) == 0


def test_two_switch_individual_rewards():
    env = TwoSwitchEnv(seed=0, individual_reward=True, common_reward=False)
    env.reset()
    place(env, TS_START)
    rewards, _, _ = play(env, TS_PLAN)
    assert all(isinstance(r, np.ndarray) and r.dtype == np.float32 and r.shape == (2,) for r in rewards)
    total = np.sum(rewards, axis=0)
    team = 4 - 11 / 100
    np.testing.assert_allclose(total, [team + 1, team + 2], rtol=1e-6)  # agent 1: switch + home
    np.testing.assert_allclose(rewards[2], [3, 3])

    summed = TwoSwitchEnv(seed=0, individual_reward=True)
    summed.reset()
    place(summed, TS_START)
    assert sum(play(summed, TS_PLAN)[0]) == pytest.approx(team + 3)
    mean = TwoSwitchEnv(seed=0, individual_reward=True, reward_scalarisation="mean")
    mean.reset()
    place(mean, TS_START)
    assert sum(play(mean, TS_PLAN)[0]) == pytest.approx(team + 1.5)


def test_victim_rubble_scripted_solution():
    env = VictimRubbleEnv(seed=0, individual_reward=True, common_reward=False)
    env.reset()
    place(env, VR_START)
    rewards, terminals, infos = play(env, VR_PLAN)
    assert terminals == [False] * 27 + [True]
    assert infos[-1] == {"success": 1, "events": 5, "victims_healed": 2, "rubble_removed": 3}
    team = 6 - 28 / 150
    np.testing.assert_allclose(np.sum(rewards, axis=0), [team + 2, team + 3], rtol=1e-6)
    np.testing.assert_allclose(rewards[2], [1, 2])  # orange removes Rubble1 at step 3
    np.testing.assert_allclose(rewards[4], [2, 1])  # green heals Victim1 at step 5


def test_victim_rubble_success_without_rubble_flag():
    env = VictimRubbleEnv(seed=0, success_requires_rubble=False)
    env.reset()
    place(env, VR_START)
    plan = (VR_PLAN[0], VR_PLAN[1][:7] + [STAY] * 21)  # the harmless rubble stays
    rewards, terminals, infos = play(env, plan)
    assert terminals[-1] and infos[-1]["rubble_removed"] == 2
    assert sum(rewards) == pytest.approx(4 + 1 - 28 / 150)


@pytest.mark.parametrize("mode,last_reward,total", [("on_success", 0.0, 0.0), ("at_end", -1.0, -1.0),
                                                    ("per_step", -0.2, -1.0), ("none", 0.0, 0.0)])
def test_step_penalty_modes_on_failure(mode, last_reward, total):
    env = TwoSwitchEnv(seed=0, episode_limit=5, step_penalty=mode)
    env.reset()
    rewards = [env.step([STAY, STAY])[0] for _ in range(5)]
    assert rewards[-1] == pytest.approx(last_reward) and sum(rewards) == pytest.approx(total)


@pytest.mark.parametrize("mode,total", [("on_success", 4 - 0.11), ("at_end", 4 - 0.11), ("per_step", 4 - 0.11),
                                        ("none", 4.0)])
def test_step_penalty_modes_on_success(mode, total):
    env = TwoSwitchEnv(seed=0, step_penalty=mode)
    env.reset()
    place(env, TS_START)
    assert sum(play(env, TS_PLAN)[0]) == pytest.approx(total)
    scaled = TwoSwitchEnv(seed=0, step_penalty=mode, success_reward=2.0, event_reward=0.5)
    scaled.reset()
    place(scaled, TS_START)
    assert sum(play(scaled, TS_PLAN)[0]) == pytest.approx(total - 1.5 + 1)


def test_rubble_blocks_the_healer_and_only_roles_interact():
    env = VictimRubbleEnv(seed=0)
    env.reset()
    place(env, [((7, 1), LEFT), ((6, 1), RIGHT)])
    assert env.get_avail_agent_actions(0)[RIGHT] == 1  # turns towards the rubble
    env.step([RIGHT, STAY])
    assert env._s.pos[0] == (7, 1) and env._s.facing[0] == FACING[RIGHT]
    assert env.get_avail_agent_actions(0) == [1, 0, 0, 1, 0, 0]  # facing rubble: no move right, no interact
    env.step([INTERACT, STAY])  # a forced wrong-role interact changes nothing
    assert env._s.status[2] == 1
    # orange can: swap places so that it faces the rubble
    place(env, [((6, 2), DOWN), ((7, 1), RIGHT)])
    assert env.get_avail_agent_actions(1)[INTERACT] == 1
    reward, _, info = env.step([STAY, INTERACT])
    assert reward == 1.0 and info["rubble_removed"] == 1 and env._s.status[2] == 0
    env.step([STAY, RIGHT])
    assert env._s.pos[1] == (8, 1)
    # orange facing a victim cannot heal it; green can
    place(env, [((4, 1), DOWN), ((9, 8), UP)])
    assert env.get_avail_agent_actions(1)[INTERACT] == 0
    place(env, [((9, 8), UP), ((4, 1), DOWN)])
    assert env.get_avail_agent_actions(0)[INTERACT] == 1


def test_masks():
    env = TwoSwitchEnv(seed=0)
    env.reset()
    place(env, [((1, 5), DOWN), ((4, 5), DOWN)])
    # (1,5): wall left and below, switch two cells up
    assert env.get_avail_agent_actions(0) == [1, 1, 0, 0, 1, 0]
    # (4,5) above the locked door: no move down
    assert env.get_avail_agent_actions(1) == [1, 1, 0, 1, 1, 0]
    place(env, [((1, 6), DOWN), ((2, 7), LEFT)])
    assert env.get_avail_agent_actions(0)[UP] == 1  # would turn to the switch
    assert env.get_avail_agent_actions(1) == [1, 0, 1, 0, 1, 1]  # faces the switch: interact, no move left
    env.step([STAY, INTERACT])
    assert env.get_avail_agent_actions(1) == [1, 0, 1, 0, 1, 0]  # triggered: nothing to interact with
    for i in range(2):  # stay always available, at least one action
        assert env.get_avail_agent_actions(i)[STAY] == 1
    # the teammate's cell: the move is available but only turns
    place(env, [((3, 6), LEFT), ((4, 6), LEFT)])
    assert env.get_avail_agent_actions(0)[RIGHT] == 1
    env.step([RIGHT, STAY])
    assert env._s.pos[0] == (3, 6) and env._s.facing[0] == FACING[RIGHT]


def test_door_opens_only_with_both_switches():
    env = TwoSwitchEnv(seed=0)
    env.reset()
    place(env, [((2, 7), LEFT), ((4, 5), DOWN)])
    env.step([INTERACT, DOWN])
    assert env._s.pos[1] == (4, 5) and env.get_state()[fields(env)["door_open"].start] == 0
    place(env, [((4, 5), DOWN), ((6, 7), RIGHT)])
    env.step([STAY, INTERACT])
    assert env.get_state()[fields(env)["door_open"].start] == 1
    assert env.get_avail_agent_actions(0)[DOWN] == 1
    env.step([DOWN, STAY])
    assert env._s.pos[0] == (4, 4)


def test_interact_adjacent_mode_and_heal_steps():
    env = VictimRubbleEnv(seed=0, interact_mode="adjacent", heal_steps=3)
    env.reset()
    place(env, [((2, 9), DOWN), ((5, 5), UP)])  # green next to Victim1 without facing it
    assert env.get_avail_agent_actions(0)[INTERACT] == 1
    f = fields(env)["victim1_healed"]
    for n in (1, 2):
        reward, _, info = env.step([INTERACT, STAY])
        assert reward == 0.0 and info["victims_healed"] == 0
        assert env.get_state()[f.start] == pytest.approx(n / 3)
    reward, _, info = env.step([INTERACT, STAY])
    assert reward == 1.0 and info["victims_healed"] == 1 and env.get_avail_agent_actions(0)[INTERACT] == 0
    assert "healing" not in env.describe_state() and "Victim1: Chamber2 (1,9), healed." in env.describe_state()
    facing = VictimRubbleEnv(seed=0)
    facing.reset()
    place(facing, [((2, 9), DOWN), ((5, 5), UP)])
    assert facing.get_avail_agent_actions(0)[INTERACT] == 0


@pytest.mark.parametrize("cls", [TwoSwitchEnv, VictimRubbleEnv])
def test_truncation_and_shapes(cls):
    env = cls(seed=1, episode_limit=7)
    info_ = env.get_env_info()
    assert info_["n_agents"] == 2 and info_["n_actions"] == 6 and info_["episode_limit"] == 7
    rng = np.random.default_rng(0)
    for _ in range(2):
        obs, state = env.reset()
        assert len(obs) == 2 and all(o.dtype == np.float32 and o.shape == (env.get_obs_size(),) for o in obs)
        assert state.dtype == np.float32 and state.shape == (env.get_state_size(),)
        assert all(0 <= v <= 1 for o in obs for v in o)  # normalised observations
        for t in range(1, 8):
            avail = env.get_avail_actions()
            acts = [int(rng.choice(np.flatnonzero(a))) for a in avail]
            _, terminated, info = env.step(acts)
            assert terminated is False  # no success possible this fast from random play
            assert info.get("episode_limit", False) == (t == 7)
            assert set(info) >= {"success", "events"}
            assert all(isinstance(v, (int, float, bool)) for v in info.values())
        assert env.get_state()[-1] == 1.0


@pytest.mark.parametrize("cls", [TwoSwitchEnv, VictimRubbleEnv])
def test_seeding(cls):
    def rollout(env, n_episodes=3, steps=20):
        out, rng = [], np.random.default_rng(5)
        for _ in range(n_episodes):
            obs, state = env.reset()
            out.append(state)
            assert np.array_equal(np.concatenate(obs), np.concatenate(env.get_obs()))
            for _ in range(steps):
                env.step([int(rng.choice(np.flatnonzero(a))) for a in env.get_avail_actions()])
                out.append(env.get_state())
        return np.stack(out)

    a, b = rollout(cls(seed=3)), rollout(cls(seed=3))
    np.testing.assert_array_equal(a, b)
    starts = [cls(seed=s).reset()[1] for s in range(6)]
    assert len({s.tobytes() for s in starts}) > 1
    env = cls(seed=0)
    first = env.reset()[1]
    later = [env.reset()[1] for _ in range(5)]  # later resets continue the RNG
    assert any(not np.array_equal(first, s) for s in later)
    env.seed(0)
    np.testing.assert_array_equal(env.reset()[1], first)


@pytest.mark.parametrize("cls", [TwoSwitchEnv, VictimRubbleEnv])
def test_schema_fields_hold_the_internal_values(cls):
    env = cls(seed=2)
    env.reset()
    check_schema(env.state_schema(), env.get_state_size())
    assert len(env.action_meanings()) == 6 and env.action_meanings()[0] == "stay still"
    assert "1 - n/" in env.reward_description()
    prompt = env.describe_task()
    assert env.task_summary() in prompt and "agent_1_facing" in prompt and "interact" in prompt
    rng = np.random.default_rng(1)
    for _ in range(30):
        env.step([int(rng.choice(np.flatnonzero(a))) for a in env.get_avail_actions()])
        state, f, s = env.get_state(), fields(env), env._s
        for i in range(2):
            assert tuple(state[f[f"agent_{i}_position"].start:f[f"agent_{i}_position"].end]) == s.pos[i]
            assert np.argmax(state[f[f"agent_{i}_facing"].start:f[f"agent_{i}_facing"].end]) == s.facing[i]
        for k, it in enumerate(env.items):
            key = it.name.lower()
            assert tuple(state[f[f"{key}_position"].start:f[f"{key}_position"].end]) == s.cells[k]
            status = [v for n, v in f.items() if n.startswith(key + "_") and not n.endswith("_position")]
            if status:
                assert state[status[0].start] == env._status_value(k, s.status[k])
        assert state[f["time_fraction"].start] == pytest.approx(s.t / env.episode_limit)
        # the state vector round-trips through set_state
        clone = cls(seed=9)
        clone.set_state(state)
        np.testing.assert_array_equal(clone.get_state(), state)
        for i in range(2):
            np.testing.assert_array_equal(clone.get_obs_agent(i), env.get_obs_agent(i))


def test_observation_is_ego_first():
    env = VictimRubbleEnv(seed=0)
    env.reset()
    place(env, VR_START)
    o0, o1 = env.get_obs()
    np.testing.assert_allclose(o0[:2], [0.4, 0.8])
    np.testing.assert_allclose(o0[6:8], [1, 0])  # role: green
    np.testing.assert_allclose(o0[8:10], [0.6, 0.2])  # teammate
    np.testing.assert_allclose(o1[:2], [0.6, 0.2])
    np.testing.assert_allclose(o1[6:8], [0, 1])
    np.testing.assert_allclose(o1[8:10], [0.4, 0.8])
    np.testing.assert_array_equal(o0[14:], o1[14:])  # shared object part


def test_text_renderings():
    vr = VictimRubbleEnv(seed=0)
    vr.reset()
    place(vr, [((4, 3), UP), ((5, 5), UP)])
    text = vr.describe_state()
    for s in ("V", "R", "#", "0", "1", "Legend", "y = row",
              "Rubble1: Chamber5 (8,1), present, blocking the only passage between Chamber5 and Chamber3 "
              "from the side of Chamber5",
              "Rubble2: Chamber5 (9,2), present, blocking the only passage between Chamber5 and Chamber4",
              "Chamber4 contains 1 unhealed victim", "Rubble3: Chamber1 (1,5), present, blocking nothing"):
        assert s in text
    assert vr.render_map().splitlines()[1].split()[1:] == ["#", "V", ".", "#", ".", ".", ".", "#", "#", "V", "#"]
    view = vr.describe_agent_view(vr.get_state(), 1)
    assert "You are the ego agent: the orange agent (agent 1) who can remove rubble, at Chamber3 (5,5)" in view
    assert "Your teammate: the green agent (agent 0) who can heal victims, at Chamber3 (4,3)" in view
    assert vr.describe_agent_view(None, 0).startswith("Coordinates") and "ego agent: the green agent" in \
        vr.describe_agent_view(None, 0)
    ts = TwoSwitchEnv(seed=0)
    ts.reset()
    place(ts, TS_START)
    text = ts.describe_state()
    assert all(s in text for s in ("S", "D", "H", "Switch1: the upper room (1,7), not triggered", "locked"))
    ts.step([LEFT, UP])
    ts.step([UP, RIGHT])
    ts.step([INTERACT, INTERACT])
    grid = ts.render_map()
    assert "s" in grid and "/" in grid and "S" not in grid and "D" not in grid
    assert "Door: the passage between the lower room and the upper room (4,4), open." in ts.describe_state()
    # describe_state of a stored state vector, not the current one
    assert ts.describe_state(ts.get_state()) == ts.describe_state()


def test_two_switch_oracle():
    env = TwoSwitchEnv(seed=0)
    env.reset()
    place(env, TS_START)
    g0, g1 = env.subgoal(0), env.subgoal(1)
    assert (g0.name, g0.distance) == ("trigger Switch1", 2) and (g1.name, g1.distance) == ("trigger Switch2", 2)
    # swap sides: the assignment follows
    place(env, [((6, 6), UP), ((2, 6), UP)])
    assert env.subgoal(0).name == "trigger Switch2" and env.subgoal(1).name == "trigger Switch1"
    # along the scripted plan the distance of the agent that acts never grows
    place(env, TS_START)
    for t, acts in enumerate(zip(*TS_PLAN)):
        before = [env.subgoal(i) for i in range(2)]
        env.step(list(acts))
        after = [env.subgoal(i) for i in range(2)]
        for i in range(2):
            if acts[i] in (UP, DOWN, LEFT, RIGHT) and before[i].name == after[i].name:
                assert after[i].distance == before[i].distance - 1, (t, i, before, after)
    # one switch left: the closer agent takes it, the other heads home as if the door were open
    env.reset()
    place(env, [((2, 7), LEFT), ((5, 6), DOWN)])
    env.step([INTERACT, STAY])
    assert env.subgoal(1).name == "trigger Switch2" and env.subgoal(1).distance == 2
    g = env.subgoal(0)
    assert g.name == "reach home (door still locked)" and g.distance == 2 + 2 + 4
    state = env.get_state()
    assert env.subgoal_distance(0, state) == 8


def test_victim_rubble_oracle():
    env = VictimRubbleEnv(seed=0)
    env.reset()
    place(env, VR_START)
    g = env.subgoal(0)
    assert (g.name, g.cell, g.distance) == ("heal Victim1", (1, 9), 4)  # left x3, turn up
    g = env.subgoal(1)
    assert g.name == "remove Rubble1" and g.distance == 2  # down, right (now facing it)
    for acts in list(zip(*VR_PLAN))[:7]:
        env.step(list(acts))
    assert env.subgoal(1).name == "remove Rubble3"
    assert env.subgoal(0).name == "heal Victim2"
    # with Victim1 healed and the passage still blocked the green agent approaches Victim2 past the rubble
    blocked = VictimRubbleEnv(seed=0)
    blocked.reset()
    place(blocked, [((2, 9), LEFT), ((5, 5), UP)])
    blocked.step([INTERACT, STAY])
    g = blocked.subgoal(0)
    assert g.name == "approach Victim2 (blocked by rubble)" and math.isfinite(g.distance)
    assert blocked.subgoal(1).name == "remove Rubble1"


def test_random_free_objects():
    env = VictimRubbleEnv(seed=4, random_free_objects=True)
    layouts = set()
    for _ in range(10):
        env.reset()
        cells = env._s.cells
        layouts.add((cells[0], cells[4]))
        assert cells[1:4] == [(9, 9), (8, 1), (9, 2)]
        assert env._chamber_of[cells[0]] in env.LEFT_ROOMS and env._chamber_of[cells[4]] in env.LEFT_ROOMS
        assert "Rubble3" in env.describe_state() and env.subgoal(0).distance < math.inf
    assert len(layouts) > 3
    np.testing.assert_array_equal(VictimRubbleEnv(seed=4, random_free_objects=True).get_state(),
                                  VictimRubbleEnv(seed=4, random_free_objects=True).get_state())


def test_errors():
    with pytest.raises(TypeError, match=r"unknown env argument 'heal_steps' for two_switch; valid: episode_limit"):
        TwoSwitchEnv(heal_steps=2)
    with pytest.raises(TypeError, match="heal_steps, success_requires_rubble"):
        VictimRubbleEnv(size=3)
    with pytest.raises(ValueError, match="interact_mode"):
        TwoSwitchEnv(interact_mode="near")
    with pytest.raises(ValueError, match="step_penalty"):
        VictimRubbleEnv(step_penalty="sometimes")
    with pytest.raises(ValueError, match="episode_limit"):
        TwoSwitchEnv(episode_limit=0)
    with pytest.raises(ValueError, match="heal_steps"):
        VictimRubbleEnv(heal_steps=0)
    env = TwoSwitchEnv()
    with pytest.raises(ValueError, match="not in 0..5"):
        env.step([7, 0])


@pytest.mark.parametrize("name,cls", [("two_switch", TwoSwitchEnv), ("victim_rubble", VictimRubbleEnv)])
def test_configs_build_the_env(name, cls):
    with open(os.path.join(CONFIG_DIR, f"{name}.yaml")) as f:
        cfg = yaml.safe_load(f)
    env = make_env(cfg["env"], seed=0, common_reward=True, reward_scalarisation="sum", **cfg["env_args"])
    assert isinstance(env, cls) and env.episode_limit == cfg["env_args"]["episode_limit"]


def oracle_policy(env, clone, rng):
    """Interact when possible, else the move that brings the agent's oracle sub-goal closest."""
    state, acts = env.get_state(), []
    for i in range(env.n_agents):
        avail = env.get_avail_agent_actions(i)
        if avail[INTERACT]:
            acts.append(INTERACT)
            continue
        scored = []
        for a in rng.permutation(5):
            if avail[a]:
                clone.set_state(state)
                clone.step([int(a) if j == i else STAY for j in range(env.n_agents)])
                scored.append((clone.subgoal_distance(i), int(a)))
        acts.append(min(scored, key=lambda x: x[0])[1])
    return acts


@pytest.mark.parametrize("cls,max_len", [(TwoSwitchEnv, 20), (VictimRubbleEnv, 45)])
def test_following_the_oracle_solves_the_task(cls, max_len):
    env, clone, rng = cls(seed=0), cls(seed=1), np.random.default_rng(0)
    for _ in range(3):
        env.reset()
        for _ in range(max_len):
            _, terminated, info = env.step(oracle_policy(env, clone, rng))
            if terminated:
                break
        assert info["success"] == 1


def test_set_state_rejects_impossible_positions():
    env = TwoSwitchEnv(seed=0)
    with pytest.raises(ValueError, match="outside the floor"):
        place(env, [((0, 0), UP), ((2, 6), UP)])
    with pytest.raises(ValueError, match="share the cell"):
        place(env, [((2, 6), UP), ((2, 6), UP)])
