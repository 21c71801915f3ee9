"""LCA env hooks: roles and stay actions, the ego-first obs schema and its identity fields (Eq. 5), the agent
views and dependency text, pair_oracle's cases, and the greedy oracle policies against random."""
import numpy as np
import pytest

from envs.description import check_schema, identity_dims
from envs.gridworld import DOWN, INTERACT, LEFT, RIGHT, STAY, UP, TwoSwitchEnv, VictimRubbleEnv
from envs.multiagentenv import MissingEnvHook, MultiAgentEnv
from envs.pistonball import PistonballEnv

FACING = {UP: 0, DOWN: 1, LEFT: 2, RIGHT: 3}


def place(env, starts, **statuses):
    """Agent i at starts[i] = ((x, y), facing move); statuses: schema field name -> value."""
    state, f = env.get_state(), {f.name: f for f in env.state_schema()}
    for i, (cell, facing) in enumerate(starts):
        state[f[f"agent_{i}_position"].start:f[f"agent_{i}_position"].end] = cell
        state[f[f"agent_{i}_facing"].start:f[f"agent_{i}_facing"].end] = np.eye(4)[FACING[facing]]
    for name, v in statuses.items():
        state[f[name].start] = v
    env.set_state(state)
    return env.get_state()


def transition(env, state, actions):
    env.set_state(state)
    env.step(list(actions))
    return env.get_state()


class Bare(MultiAgentEnv):
    n_agents = 2


def test_roles_stay_actions_and_missing_hooks():
    assert TwoSwitchEnv(seed=0).agent_roles() == ["agent", "agent"]
    assert VictimRubbleEnv(seed=0).agent_roles() == ["healer", "remover"]
    assert PistonballEnv(n_pistons=4, seed=0).agent_roles() == ["piston"] * 4
    assert (TwoSwitchEnv.stay_action, VictimRubbleEnv.stay_action, PistonballEnv.stay_action) == (0, 0, 1)
    assert PistonballEnv.action_meanings(None)[1] == "stay" and TwoSwitchEnv(seed=0).action_meanings()[0] == \
        "stay still"
    bare = Bare()
    assert bare.stay_action is None and bare.task_dependencies() == ""
    for hook, call in [("agent_roles", bare.agent_roles), ("obs_schema", bare.obs_schema),
                       ("pair_oracle", lambda: bare.pair_oracle(None, None, None, 0)),
                       ("describe_agent_view", lambda: bare.describe_agent_view(None, 0)),
                       ("oracle_actions", bare.oracle_actions)]:
        with pytest.raises(MissingEnvHook, match=f"LCA needs the env method {hook}\\(\\), which env Bare") as err:
            call()
        assert err.value.hook == hook and isinstance(err.value, NotImplementedError)
    assert not hasattr(PistonballEnv, "sample_state") and hasattr(TwoSwitchEnv, "sample_state")


@pytest.mark.parametrize("env", [TwoSwitchEnv(seed=0), VictimRubbleEnv(seed=0), PistonballEnv(seed=0)],
                         ids=["two_switch", "victim_rubble", "pistonball"])
def test_obs_schema_tiles_the_observation(env):
    fields = env.obs_schema()
    check_schema(fields, env.get_obs_size(), "observation")
    assert sum(f.size for f in fields) == env.get_obs_size()
    if isinstance(env, PistonballEnv):
        assert identity_dims(env) == [] and [f.name for f in fields][:4] == ["own_height", "left_neighbour_height",
                                                                             "right_neighbour_height", "own_x"]
        return
    assert identity_dims(env) == [6, 7]
    f = {x.name: x for x in fields}
    env.reset()
    place(env, [((4, 3), LEFT), ((5, 7), DOWN)])
    state_f = {x.name: x for x in env.state_schema()}
    state = env.get_state()
    for i in range(2):
        obs = env.get_obs_agent(i)
        np.testing.assert_allclose(obs[f["ego_position"].start:f["ego_position"].end] * [env.width - 1,
                                   env.height - 1], env._s.pos[i], atol=1e-5)
        np.testing.assert_array_equal(obs[f["ego_role"].start:f["ego_role"].end], np.eye(2)[i])
        np.testing.assert_allclose(obs[f["teammate_1_position"].start:f["teammate_1_position"].end]
                                   * [env.width - 1, env.height - 1], env._s.pos[1 - i], atol=1e-5)
        for name in state_f:  # object statuses hold the state's values
            if name.endswith(("_triggered", "_open", "_healed", "_present")):
                assert obs[f[name].start] == state[state_f[name].start]


def swap_agents(env, state):
    """The state with agent 0's and agent 1's position and facing exchanged."""
    out = np.array(state)
    out[0:6], out[6:12] = state[6:12], state[0:6]
    return out


def test_two_switch_shared_encoding_is_ego_first():
    """LCA Eq. 5: the observation of (s, agent 0) equals that of the agent-swapped state for agent 1, once the
    identity fields are dropped; with them the two differ (so a shared model must not see them)."""
    env = TwoSwitchEnv(seed=0)
    keep = [k for k in range(env.get_obs_size()) if k not in identity_dims(env)]
    rng = np.random.default_rng(0)
    for _ in range(50):
        state = env.sample_state(rng)
        env.set_state(state)
        o = env.get_obs()
        env.set_state(swap_agents(env, state))
        swapped = env.get_obs()
        np.testing.assert_array_equal(o[0][keep], swapped[1][keep])
        np.testing.assert_array_equal(o[1][keep], swapped[0][keep])
        assert not np.array_equal(o[0], swapped[1])


def test_grid_agent_views_name_role_cell_and_constraints():
    vr = VictimRubbleEnv(seed=0)
    state = place(vr, [((5, 5), UP), ((4, 3), DOWN)])
    view = vr.describe_agent_view(state, 1)
    assert "You are the ego agent: the orange agent (agent 1) who can remove rubble, at Chamber3 (4,3), facing " \
           "down." in view
    assert "Your teammate: the green agent (agent 0) who can heal victims, at Chamber3 (5,5), facing up." in view
    assert "Current constraint: Victim2 (Chamber4) cannot be reached yet: Rubble1 and Rubble2 still block the " \
           "only way to it, so the orange agent must remove them before the green agent can heal it." in view
    assert "Rubble1: Chamber5 (8,1), present, blocking the only passage between Chamber5 and Chamber3" in view
    green = vr.describe_agent_view(state, 0)
    assert "You are the ego agent: the green agent (agent 0) who can heal victims, at Chamber3 (5,5)" in green
    cleared = place(vr, [((5, 5), UP), ((4, 3), DOWN)], rubble1_present=0)
    assert "Rubble2 still blocks the only way to it, so the orange agent must remove it" in \
        vr.describe_agent_view(cleared, 0)
    cleared = place(vr, [((5, 5), UP), ((4, 3), DOWN)], rubble1_present=0, rubble2_present=0)
    assert "Current constraint: none" in vr.describe_agent_view(cleared, 1)
    deps = vr.task_dependencies()
    assert "The orange agent must remove Rubble1 and Rubble2 before the green agent can reach Victim2" in deps
    assert "Rubble3 blocks nothing" in deps and "Victim1" in deps

    ts = TwoSwitchEnv(seed=0)
    state = place(ts, [((2, 6), UP), ((6, 5), RIGHT)], switch1_triggered=1)
    view = ts.describe_agent_view(state, 1)
    assert "You are the ego agent: the orange agent (agent 1), at the upper room (6,5), facing right." in view
    assert "Your teammate: the green agent (agent 0), at the upper room (2,6), facing up." in view
    assert "Current constraint: the door stays locked, and home out of reach, until Switch2 is triggered." in view
    assert "both switches" in ts.task_dependencies()


def pistonball_state(env, ball_x, heights, vx=0.0):
    """A state vector (get_state layout) with the ball's centre at ball_x piston widths from the left wall."""
    n = env.n_pistons
    return np.array([ball_x / n, 0.5, vx, 0.0, 0.0, *heights], dtype=np.float32)


def test_pistonball_agent_view():
    env = PistonballEnv(n_pistons=5, seed=0)
    state = pistonball_state(env, 3.5, [2 / 16, 0, 6 / 16, 1, 9 / 16], vx=-0.4)
    view = env.describe_agent_view(state, 2)
    lines = view.splitlines()
    assert lines[0] == "You are piston 2 of 5 (0 = leftmost); your height is 6/16 (0 = lowest, 16 = highest)."
    assert lines[1:5] == ["Teammate piston 0 (2 pistons to your left): height 2/16.",
                          "Teammate piston 1 (1 piston to your left): height 0/16.",
                          "Teammate piston 3 (1 piston to your right): height 16/16.",
                          "Teammate piston 4 (2 pistons to your right): height 9/16."]
    assert "its centre is above piston 3, 1 piston to your right (+1.00 piston widths from your centre)" in view
    assert "left edge is 100 px from the left wall" in view and "it is moving left at 40 px/s" in view
    assert "directly above you" in env.describe_agent_view(state, 3)
    assert env.describe_agent_view(None, 0).startswith("You are piston 0 of 5 (0 = leftmost, the leftmost)")
    with pytest.raises(ValueError, match="agent must be in 0..4"):
        env.describe_agent_view(state, 5)
    assert "sink" in env.task_dependencies()


def test_grid_pair_oracle_cases():
    ts = TwoSwitchEnv(seed=0)
    s = place(ts, [((2, 7), LEFT), ((5, 7), UP)])  # agent 0 faces Switch1; agent 1 is 1 move from facing Switch2
    cases = [
        ((INTERACT, STAY), 0, "better"),  # event: agent 0 triggers Switch1
        ((INTERACT, STAY), 1, "equal"),  # agent 1 stayed: no credit for the teammate's event
        ((STAY, RIGHT), 1, "better"),  # at (6,7) facing Switch2
        ((STAY, LEFT), 1, "worse"),  # 2 actions from (4,7)
        ((STAY, DOWN), 1, "worse"),  # 2 actions from (5,6)
        ((STAY, STAY), 1, "equal"),
    ]
    for acts, i, want in cases:
        assert ts.pair_oracle(s, acts, transition(ts, s, acts), i) == want, (acts, i)
    # agent 0 interacts with nothing (it faces the floor): equal; a move blocked by the teammate: equal
    s = place(ts, [((3, 6), RIGHT), ((4, 6), UP)])
    assert ts.pair_oracle(s, (INTERACT, STAY), transition(ts, s, (INTERACT, STAY)), 0) == "equal"
    assert ts.pair_oracle(s, (RIGHT, STAY), transition(ts, s, (RIGHT, STAY)), 0) == "equal"
    # both interact with Switch1: agent 0 acts first and gets the event; agent 1's interact did nothing
    s = place(ts, [((2, 7), LEFT), ((1, 6), UP)])
    after = transition(ts, s, (INTERACT, INTERACT))
    assert ts.pair_oracle(s, (INTERACT, INTERACT), after, 0) == "better"
    assert ts.pair_oracle(s, (INTERACT, INTERACT), after, 1) == "equal"
    # arriving home is an event
    s = place(ts, [((4, 2), DOWN), ((2, 6), UP)], switch1_triggered=1, switch2_triggered=1, door_open=1)
    assert ts.pair_oracle(s, (DOWN, STAY), transition(ts, s, (DOWN, STAY)), 0) == "better"

    vr = VictimRubbleEnv(seed=0)
    s = place(vr, [((2, 9), LEFT), ((7, 1), RIGHT)])  # green faces Victim1, orange faces Rubble1
    after = transition(vr, s, (INTERACT, INTERACT))
    assert vr.pair_oracle(s, (INTERACT, INTERACT), after, 0) == "better"  # healed
    assert vr.pair_oracle(s, (INTERACT, INTERACT), after, 1) == "better"  # removed
    # orange walking away from the blocking rubble is worse, towards it (from farther) better
    s = place(vr, [((2, 8), UP), ((5, 1), RIGHT)])
    assert vr.pair_oracle(s, (STAY, LEFT), transition(vr, s, (STAY, LEFT)), 1) == "worse"
    assert vr.pair_oracle(s, (STAY, RIGHT), transition(vr, s, (STAY, RIGHT)), 1) == "better"
    with pytest.raises(ValueError, match="expected 2 actions"):
        vr.pair_oracle(s, (STAY,), s, 0)


def test_pistonball_pair_oracle_rule():
    env = PistonballEnv(n_pistons=5, seed=0)
    h = [0.5] * 5
    s = pistonball_state(env, 2.5, h)  # the ball's centre over the middle of piston 2

    def rank(i, action, before=h):
        s = pistonball_state(env, 2.5, before)
        after = np.array(s)
        step = {0: -1 / 16, 1: 0.0, 2: 1 / 16}[action]
        after[5 + i] = np.clip(after[5 + i] + step, 0, 1)
        acts = [1] * 5
        acts[i] = action
        return env.pair_oracle(s, acts, after, i)

    assert [rank(i, 2) for i in range(5)] == ["worse", "worse", "worse", "better", "better"]  # rise
    assert [rank(i, 0) for i in range(5)] == ["better", "better", "better", "worse", "worse"]  # sink
    assert [rank(i, 1) for i in range(5)] == ["equal"] * 5  # stay
    assert rank(4, 2, before=[0.5, 0.5, 0.5, 0.5, 1.0]) == "equal"  # blocked at the top
    assert rank(0, 0, before=[0.0, 0.5, 0.5, 0.5, 0.5]) == "equal"  # blocked at the bottom
    assert list(env.should_rise(pistonball_state(env, 3.2, h))) == [False, False, False, False, True]  # 3 is under it
    np.testing.assert_array_equal(env.oracle_actions(s), [0, 0, 0, 2, 2])
    np.testing.assert_array_equal(env.oracle_actions(pistonball_state(env, 2.5, [0, 0.5, 0.5, 0.5, 1])),
                                  [1, 0, 0, 2, 1])
    # on a real transition each piston's move changes its height by one step, and the oracle's actions rank
    # better or, where blocked, equal
    env.reset()
    for _ in range(5):
        before = env.get_state().copy()
        acts = env.oracle_actions()
        env.step(acts)
        after = env.get_state()
        for i in range(5):
            assert env.pair_oracle(before, acts, after, i) == ("equal" if acts[i] == 1 else "better")
            if acts[i] != 1:
                assert abs(after[5 + i] - before[5 + i]) == pytest.approx(1 / 16, abs=1e-5)


def run_episodes(env, policy, seeds):
    """(success rate, mean return, mean length) over episodes starting from env.seed(seed)."""
    wins, returns, lengths = [], [], []
    for seed in seeds:
        env.seed(seed)
        env.reset()
        total, steps, ended = 0.0, 0, False
        while not ended:
            reward, terminated, info = env.step(policy(env))
            total += float(np.sum(reward))
            steps += 1
            ended = terminated or info.get("episode_limit", False)
        wins.append(info["success"])
        returns.append(total)
        lengths.append(steps)
    return np.mean(wins), np.mean(returns), np.mean(lengths)


@pytest.mark.parametrize("cls", [TwoSwitchEnv, VictimRubbleEnv])
def test_greedy_oracle_policy_solves_the_grids(cls):
    env = cls(seed=0)
    rate, ret, length = run_episodes(env, lambda e: e.oracle_actions(), range(50))
    assert rate >= 0.95  # measured: 1.0 on both (Two-Switch 10.5 steps on average, Victim-Rubble 34.1)
    assert length < env.episode_limit / 3
    # the policy's actions are what the oracle ranks better (or equal while waiting), rarely worse
    rng, worse, ranked = np.random.default_rng(1), 0, 0
    for _ in range(100):
        state = env.sample_state(rng)
        env.set_state(state)
        acts = env.oracle_actions(rng=rng)
        after = transition(env, state, acts)
        ranks = [env.pair_oracle(state, acts, after, i) for i in range(2)]
        worse += ranks.count("worse")
        ranked += 2
    assert worse / ranked < 0.05


def test_greedy_oracle_policy_beats_random_on_pistonball():
    env = PistonballEnv(n_pistons=5, reward="sparse", seed=0)
    rng = np.random.default_rng(0)
    oracle = run_episodes(env, lambda e: e.oracle_actions(), range(100, 150))
    uniform = run_episodes(env, lambda e: rng.integers(0, 3, size=e.n_agents), range(100, 150))
    # measured (these 50 episodes): wall reach 0.96 vs 0.48, return -2.3 vs -37.5 (sum over 5 pistons), 15 vs 80
    # steps
    assert oracle[0] >= uniform[0] + 0.3
    assert oracle[1] >= uniform[1] + 20
    assert oracle[2] < uniform[2] / 2
