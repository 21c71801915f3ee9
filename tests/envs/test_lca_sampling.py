"""Grid sample_state: random reachable states pass set_state and the reachability rules, are seeded, cover the
progress stages; check_reachable names what an impossible state breaks."""
import numpy as np
import pytest

from envs.gridworld import DOWN, LEFT, RIGHT, UP, TwoSwitchEnv, VictimRubbleEnv

FACING = {UP: 0, DOWN: 1, LEFT: 2, RIGHT: 3}
ENVS = [(TwoSwitchEnv, {}), (VictimRubbleEnv, {}), (VictimRubbleEnv, {"random_free_objects": True}),
        (VictimRubbleEnv, {"heal_steps": 3})]


def fields(env):
    return {f.name: f for f in env.state_schema()}


def edit(env, state, **values):
    """A copy of `state` with named schema fields replaced (agent_0_facing may be given as a move action)."""
    state, f = np.array(state, dtype=np.float32), fields(env)
    for name, v in values.items():
        if name.endswith("_facing") and np.ndim(v) == 0:
            v = np.eye(4)[FACING[v]]
        state[f[name].start:f[name].end] = v
    return state


@pytest.mark.parametrize("cls,kwargs", ENVS)
def test_sampled_states_are_reachable_and_seeded(cls, kwargs):
    env = cls(seed=0, **kwargs)
    def draw(seed, n):
        rng = np.random.default_rng(seed)
        return np.stack([env.sample_state(rng) for _ in range(n)])

    states = draw(7, 500)
    np.testing.assert_array_equal(states, draw(7, 500))  # same seed, same states
    assert not np.array_equal(states[:20], draw(8, 20))
    assert states.dtype == np.float32 and states.shape == (500, env.get_state_size())
    stages = set()
    for state in states:
        env.check_reachable(state)
        env.set_state(state)
        np.testing.assert_array_equal(env.get_state(), state)
        s = env._s
        assert not env._success(s) and s.t < env.episode_limit
        assert not set(s.pos) & {c for k, c in enumerate(s.cells) if env._solid_item(s, c) is not None}
        stages.add(tuple(s.status))
        if cls is TwoSwitchEnv:
            assert s.status[env._door] == int(s.status[0] and s.status[1])
            if s.status[env._door] == 0:
                assert all(y >= 5 for _, y in s.pos)  # the lower room is out of reach behind the locked door
        else:
            v2, r1, r2 = s.status[1], s.status[2], s.status[3]
            if v2 > 0:
                assert r1 == 0 and r2 == 0  # Victim2 was reached: both blocking rubbles are gone
            if r2 == 0:
                assert r1 == 0  # Rubble2 lies behind Rubble1
    if cls is TwoSwitchEnv:
        assert stages == {(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (1, 1, 1, 0)}
    else:
        assert len(stages) >= 12 and any(st[1] > 0 for st in stages)


def test_sample_state_takes_an_int_seed_and_refuses_other_rngs():
    env = TwoSwitchEnv(seed=0)
    np.testing.assert_array_equal(env.sample_state(3), env.sample_state(np.random.default_rng(3)))
    with pytest.raises(TypeError, match="numpy Generator"):
        env.sample_state("3")


def test_check_reachable_names_broken_rules():
    ts = TwoSwitchEnv(seed=0)
    base = edit(ts, ts.get_state(), agent_0_position=(2, 6), agent_1_position=(6, 6), time_fraction=0.5)
    ts.check_reachable(base)
    bad = {
        "Door has status 1, but the other objects imply 0": dict(door_open=1),
        "agent 1 (orange agent) at (4, 2) is not on a floor cell reachable": dict(agent_1_position=(4, 2)),
        "agent 0 (green agent) at (1, 7) is not on a floor cell": dict(agent_0_position=(1, 7)),  # on Switch1
        "two agents share a cell": dict(agent_1_position=(2, 6)),
        "step 0 is outside [1, 100]": dict(switch1_triggered=1, switch2_triggered=1, door_open=1, time_fraction=0),
        "not a get_state() vector": dict(agent_0_position=(2.5, 6)),
    }
    for message, change in bad.items():
        with pytest.raises(ValueError, match="not reachable") as err:
            ts.check_reachable(edit(ts, base, **change))
        assert message in str(err.value), (message, str(err.value))

    vr = VictimRubbleEnv(seed=0)
    base = edit(vr, vr.get_state(), agent_0_position=(5, 5), agent_1_position=(6, 6), time_fraction=0.5)
    vr.check_reachable(base)
    bad = {
        "Victim2 was changed but no agent able to": dict(victim2_healed=1),
        "Rubble2 was changed but no agent able to": dict(rubble2_present=0),
        "agent 0 (green agent) at (9, 5) is not on a floor cell": dict(agent_0_position=(9, 5)),  # behind rubble
        "faces a wall": dict(rubble1_present=0, rubble2_present=0, agent_0_position=(9, 5), agent_0_facing=RIGHT),
        "object cells": dict(victim1_position=(2, 9)),
        "outside 0..1": dict(rubble3_present=2),
    }
    for message, change in bad.items():
        with pytest.raises(ValueError) as err:
            vr.check_reachable(edit(vr, base, **change))
        assert message in str(err.value), (message, str(err.value))
    # the same corridor cell is fine once the rubble is gone and the agent faces along the corridor
    vr.check_reachable(edit(vr, base, rubble1_present=0, rubble2_present=0, agent_0_position=(9, 5),
                            agent_0_facing=UP))
    assert vr.reachability_problems(np.zeros(3)) == [f"expected a state vector of {vr.get_state_size()} values, "
                                                     f"got shape (3,)"]
