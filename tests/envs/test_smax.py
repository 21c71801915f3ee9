"""SMAX (jaxmarl, an optional extra that CI installs) behind the pymarl env API.

Two compiled settings are shared by all tests (compiling costs ~5 s each): 3m with the default
heuristic enemy, and 2s3z with an enemy that does not shoot (so a scripted policy wins).
"""
import subprocess
import sys

import numpy as np
import pytest

from envs.description import check_schema
from helpers import require_extra  # noqa: E402

require_extra("jaxmarl", "./install.sh smax")  # checks with find_spec: importing jaxmarl itself takes ~5 s

from envs.smax import SMAXEnv  # noqa: E402

NO_OP, STOP, NORTH, SOUTH, EAST, WEST, ATTACK = 0, 1, 2, 3, 4, 5, 6


@pytest.fixture(scope="module")
def env3m():
    return SMAXEnv(map_name="3m", seed=0)


@pytest.fixture(scope="module")
def env2s3z():
    return SMAXEnv(map_name="2s3z", enemy_shoots=False, seed=0)


def fields(env):
    return {f.name: f for f in env.state_schema()}


def value(env, name, state=None):
    f = fields(env)[name]
    return (env.get_state() if state is None else state)[f.start:f.end]


def random_actions(env, rng):
    return [int(rng.choice(np.flatnonzero(a))) for a in env.get_avail_actions()]


def sim(env):
    """The JaxMARL simulator's own arrays (allies first, then enemies)."""
    s = env.sim_state.state
    return {k: np.asarray(getattr(s, k)) for k in ("unit_positions", "unit_health", "unit_alive", "unit_types",
                                                   "unit_weapon_cooldowns", "unit_teams")}


def test_module_imports_without_jax():
    code = "import sys; import envs.smax; assert 'jax' not in sys.modules and 'jaxmarl' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="src")


@pytest.mark.parametrize("name, n, n_enemies, obs_size, state_size", [
    ("env3m", 3, 3, 75, 72), ("env2s3z", 5, 5, 127, 120)])
def test_random_episode_shapes_and_avail(request, name, n, n_enemies, obs_size, state_size):
    env = request.getfixturevalue(name)
    assert env.get_env_info() == {"state_shape": state_size, "obs_shape": obs_size, "n_actions": 6 + n_enemies,
                                  "n_agents": n, "episode_limit": env.episode_limit}
    obs, state = env.reset()
    assert len(obs) == n and all(o.shape == (obs_size,) and o.dtype == np.float32 for o in obs)
    assert state.shape == (state_size,) and state.dtype == np.float32
    rng = np.random.default_rng(0)
    steps = 0
    while True:
        avail = np.asarray(env.get_avail_actions())
        assert avail.shape == (n, 6 + n_enemies) and set(np.unique(avail)) <= {0, 1}
        alive = sim(env)["unit_alive"][:n]
        assert (avail[:, NO_OP] == ~alive).all() and (avail[:, STOP] == alive).all()
        reward, terminated, info = env.step(random_actions(env, rng))
        steps += 1
        assert isinstance(reward, float) and isinstance(terminated, bool)
        assert set(info) <= {"battle_won", "dead_allies", "dead_enemies", "episode_limit"}
        assert all(isinstance(v, (bool, int)) for v in info.values())
        if terminated or info.get("episode_limit"):
            break
    assert terminated != bool(info.get("episode_limit"))
    assert terminated == (info["dead_allies"] == n or info["dead_enemies"] == n_enemies)
    assert steps == env.episode_limit or (terminated and steps < env.episode_limit)


def test_dead_agents_can_only_no_op_and_a_loss_is_terminal(env3m):
    """Agents that only stop are shot down by the heuristic enemy."""
    env3m.reset()
    for _ in range(env3m.episode_limit):
        avail = np.asarray(env3m.get_avail_actions())
        reward, terminated, info = env3m.step([NO_OP if a[NO_OP] else STOP for a in avail])
        dead = ~sim(env3m)["unit_alive"][:3]
        for i in np.flatnonzero(dead):
            assert env3m.get_avail_agent_actions(i) == [1] + [0] * 8
            assert not env3m.get_obs_agent(i).any()
            assert not value(env3m, f"ally_{i}.health").any() and not value(env3m, f"ally_{i}.position").any()
        assert info["dead_allies"] == dead.sum() and reward == 0.0  # standing still never damages the enemy
        if terminated:
            break
    assert terminated and info == {"battle_won": False, "dead_allies": 3, "dead_enemies": 0}
    with pytest.raises(ValueError, match="not all available"):
        env3m.step([STOP, STOP, STOP])  # dead agents have only the no-op


def test_time_limit_is_a_truncation():
    env = SMAXEnv(map_name="3m", episode_limit=4, seed=1)  # reuses the compiled 3m functions
    env.reset()
    for t in range(4):
        reward, terminated, info = env.step([STOP] * 3)
        assert not terminated and info.get("episode_limit", False) == (t == 3)
    assert env.get_stats()["timeouts"] == 1


def play(env, seed_actions, steps):
    rng = np.random.default_rng(seed_actions)
    obs, state = env.reset()
    out = [(np.stack(obs), state)]
    for _ in range(steps):
        reward, terminated, info = env.step(random_actions(env, rng))
        out.append((np.stack(env.get_obs()), env.get_state(), reward, terminated))
        if terminated or info.get("episode_limit"):
            break
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def test_seeded_episodes_are_reproducible(env3m):
    other = SMAXEnv(map_name="3m", seed=5)
    env3m.seed(5)
    first = [play(e, 1, 12) + play(e, 2, 6) for e in (env3m, other)]  # the second episode continues the RNG
    assert_same(*first)
    env3m.seed(6)
    assert not np.array_equal(play(env3m, 1, 0)[0][1], first[0][0][1])


def test_state_fields_hold_the_simulator_values(env2s3z):
    env = env2s3z
    check_schema(env.state_schema(), env.get_state_size())
    env.reset()
    rng = np.random.default_rng(3)
    for _ in range(8):
        env.step(random_actions(env, rng))
    s = sim(env)
    max_hp = np.asarray(env._core.sim.unit_type_health)[s["unit_types"]]
    for u, name in enumerate([f"ally_{i}" for i in range(5)] + [f"enemy_{j}" for j in range(5)]):
        alive = s["unit_alive"][u]
        np.testing.assert_allclose(value(env, f"{name}.health"), [s["unit_health"][u] / max_hp[u] * alive], rtol=1e-6)
        np.testing.assert_allclose(value(env, f"{name}.position"), s["unit_positions"][u] * alive, rtol=1e-6)
        np.testing.assert_allclose(value(env, f"{name}.weapon_cooldown"), [s["unit_weapon_cooldowns"][u] * alive],
                                   rtol=1e-6)
        assert value(env, f"{name}.unit_type").tolist() == [float(alive and k == s["unit_types"][u]) for k in range(6)]
    assert value(env, "unit_teams").tolist() == [0] * 5 + [1] * 5
    # 2s3z: two stalkers (type 2) and three zealots (type 3) per side
    assert value(env, "unit_type_ids").tolist() == [2, 2, 3, 3, 3] * 2
    assert "2 stalker, 3 zealot" in env.task_summary()
    assert "ally_0 (stalker)" in env.describe_state()


def test_move_actions_move_the_named_position(env3m):
    env3m.reset()
    for action, axis, sign in ((NORTH, 1, 1), (EAST, 0, 1), (SOUTH, 1, -1), (WEST, 0, -1)):
        before = value(env3m, "ally_0.position").copy()
        env3m.step([action, STOP, STOP])
        delta = value(env3m, "ally_0.position") - before
        np.testing.assert_allclose(delta, sim(env3m)["unit_positions"][0] - before, rtol=1e-6)
        assert sign * delta[axis] > 1.0 and abs(delta[1 - axis]) < 0.5  # marine: 3.15/s for 0.5 s, minus pushes


def focus_fire(env):
    """Attack the lowest-numbered enemy in range, else walk towards the nearest living enemy."""
    state = env.get_state()
    actions = []
    for i, avail in enumerate(env.get_avail_actions()):
        if avail[NO_OP]:
            actions.append(NO_OP)
            continue
        targets = np.flatnonzero(avail[ATTACK:])
        if len(targets):
            actions.append(ATTACK + int(targets[0]))
            continue
        me = value(env, f"ally_{i}.position", state)
        enemies = [value(env, f"enemy_{j}.position", state) for j in range(env.n_enemies)
                   if value(env, f"enemy_{j}.health", state)[0] > 0]
        dx, dy = min(enemies, key=lambda p: np.hypot(*(p - me))) - me
        actions.append((EAST if dx > 0 else WEST) if abs(dx) > abs(dy) else (NORTH if dy > 0 else SOUTH))
    return actions


def test_win_reward_composition_and_attack_targets(env2s3z):
    env = env2s3z
    env.reset()
    max_hp = np.asarray(env._core.sim.unit_type_health)[sim(env)["unit_types"]]
    total = 0.0
    for _ in range(env.episode_limit):
        before = sim(env)["unit_health"] / max_hp
        actions = focus_fire(env)
        reward, terminated, info = env.step(actions)
        after = sim(env)["unit_health"] / max_hp
        lost = before[5:] - after[5:]
        targets = {a - ATTACK for a in actions if a >= ATTACK}
        assert set(np.flatnonzero(lost > 0)) <= targets  # only attacked enemies lose health
        bonus = 1.0 if info["battle_won"] else 0.0
        assert reward == pytest.approx(lost.sum() / 5 + bonus, abs=1e-5)
        total += reward
        if terminated:
            break
    assert terminated and info["battle_won"] and info["dead_enemies"] == 5 and "episode_limit" not in info
    assert total == pytest.approx(2.0, abs=1e-4)  # all enemy health (1) + the win bonus (1)
    assert env.get_stats()["battles_won"] >= 1


def test_common_reward_false_gives_the_team_reward_to_every_agent():
    env = SMAXEnv(map_name="3m", common_reward=False, seed=0)
    env.reset()
    reward, _, _ = env.step([STOP] * 3)
    assert reward.shape == (3,) and reward.dtype == np.float32 and (reward == reward[0]).all()


def test_descriptions(env3m):
    env3m.reset()
    check_schema(env3m.state_schema(), env3m.get_state_size())
    meanings = env3m.action_meanings()
    assert len(meanings) == 9 and meanings[NORTH] == "move north (+y)" and "enemy_2" in meanings[8]
    assert "at most 2" in env3m.reward_description() and "3 marine" in env3m.task_summary()
    assert env3m.describe_state().startswith("ally_0 (marine): health 45/45")


def test_bad_arguments_fail_clearly():
    with pytest.raises(TypeError, match="valid: map_name"):
        SMAXEnv(map_name="3m", difficulty="7")
    with pytest.raises(ValueError, match="SMAX maps: 3m"):
        SMAXEnv(map_name="MMM")
    with pytest.raises(ValueError, match="enemy_attack_mode"):
        SMAXEnv(enemy_attack_mode="weakest")
    env = SMAXEnv(map_name="3m", seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step([STOP] * 3)
    env.reset()
    with pytest.raises(ValueError, match="not all available"):
        env.step([NO_OP, STOP, STOP])  # no-op is for dead agents only
    for bad in ([STOP, STOP, -1], [STOP, STOP, 9]):
        with pytest.raises(ValueError, match="not all available"):
            env.step(bad)
    with pytest.raises(ValueError, match="not all available"):
        env.step([STOP, STOP])


def test_steps_reuse_one_compiled_function(env3m):
    """reset() and step() hand over identically typed states, so jit compiles step() once (~4 s each)."""
    env3m.reset()
    env3m.step([STOP] * 3)
    env3m.reset()
    env3m.step([STOP] * 3)
    assert env3m._core.step._cache_size() == 1 and env3m._core.reset._cache_size() == 1


def _build_in_child(queue):
    try:
        SMAXEnv(map_name="3m", seed=0)
        queue.put("built")
    except RuntimeError as e:
        queue.put(str(e))


def test_a_process_forked_after_jax_started_fails_instead_of_hanging(env3m):
    import multiprocessing as mp
    import warnings

    assert SMAXEnv.fork_safe is False  # runners should spawn workers for SMAX
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # JAX's own warning about os.fork()
        child = ctx.Process(target=_build_in_child, args=(queue,))
        child.start()
    assert "forked after its parent started JAX" in queue.get(timeout=60)
    child.join(timeout=60)


def test_parallel_runner_spawns_workers_for_smax(tmp_path):
    """JAX cannot be forked: the parallel runner must start SMAX workers with spawn and still run."""
    from helpers import run_main
    run_main(tmp_path, "qmix", "smax", "runner=parallel", "batch_size_run=2", "n_workers=1", "t_max=40",
             "env_args.episode_limit=10", "test_interval=20", "test_nepisode=2", "log_interval=20",
             "runner_log_interval=20", "learner_log_interval=20", "save_model=False", "use_tensorboard=False",
             "batch_size=2", "buffer_size=4")
