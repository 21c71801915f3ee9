"""MPE (mpe2) behind the pymarl API: the step, observations and rewards against mpe2's own env,
the state schema against the mpe2 world, fixed policies, seeding, truncation and errors."""
import os

import numpy as np
import pytest
import yaml
from mpe2 import simple_adversary_v3, simple_spread_v3, simple_tag_v3

from envs import make_env
from envs.description import check_schema
from envs.mpe import MPEEnv

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config", "envs")

# scenario kwargs, expected (n_agents, obs size), and the matching mpe2 AEC env
CASES = {
    "spread3": (dict(scenario="spread", N=3), (3, 18), lambda: simple_spread_v3.raw_env(N=3, max_cycles=99)),
    "spread6": (dict(scenario="spread", N=6), (6, 36), lambda: simple_spread_v3.raw_env(N=6, max_cycles=99)),
    "tag": (dict(scenario="tag"), (3, 16), lambda: simple_tag_v3.raw_env(max_cycles=99)),
    "tag_random": (dict(scenario="tag", prey_policy="random", num_good=2, num_obstacles=1), (3, 18),
                   lambda: simple_tag_v3.raw_env(num_good=2, num_obstacles=1, max_cycles=99)),
    "tag_open": (dict(scenario="tag", num_obstacles=0), (3, 12), lambda: simple_tag_v3.raw_env(num_obstacles=0,
                                                                                              max_cycles=99)),
    "world": (dict(scenario="world"), (3, 24), lambda: simple_tag_v3.raw_env(num_good=3, max_cycles=99)),
    "adversary": (dict(scenario="adversary"), (2, 10), lambda: simple_adversary_v3.raw_env(max_cycles=99)),
    "adversary_random": (dict(scenario="adversary", adversary_policy="random", N=3), (3, 14),
                         lambda: simple_adversary_v3.raw_env(N=3, max_cycles=99)),
}


def fields_of(env):
    return {f.name: f for f in env.state_schema()}


def value(env, name):
    f = fields_of(env)[name]
    return env.get_state()[f.start:f.end]


@pytest.mark.parametrize("case", list(CASES))
def test_shapes_and_available_actions(case):
    kwargs, (n, obs_size), _ = CASES[case]
    env = make_env("mpe", seed=0, **kwargs)
    obs, state = env.reset()
    assert env.get_env_info() == {"state_shape": n * obs_size, "obs_shape": obs_size, "n_actions": 5,
                                  "n_agents": n, "episode_limit": 25}
    assert len(obs) == n and all(o.dtype == np.float32 and o.shape == (obs_size,) for o in obs)
    assert state.dtype == np.float32 and state.shape == (n * obs_size,)
    assert env.get_avail_actions() == [[1] * 5] * n
    reward, terminated, info = env.step([4] * n)
    assert isinstance(reward, float) and terminated is False and "episode_limit" not in info
    assert all(isinstance(v, (int, float)) for v in info.values())


@pytest.mark.parametrize("N", [6, 15, 25])
def test_spread_scales_to_qllm_sizes(N):
    env = make_env("mpe", scenario="spread", N=N, max_cycles=5, seed=1)
    env.reset()
    obs_size = 4 + 2 * N + 4 * (N - 1)  # QLLM: 36, 90, 150
    assert env.get_obs_size() == obs_size and env.get_state_size() == N * obs_size
    for _ in range(5):
        env.step(np.random.default_rng(0).integers(0, 5, N))
    check_schema(env.state_schema(), env.get_state_size())


@pytest.mark.parametrize("physics", ["numpy", "mpe2"])
@pytest.mark.parametrize("case", list(CASES))
def test_steps_match_mpe2_exactly(case, physics):
    """Same seed and joint actions (ours + the fixed policy's) in mpe2's AEC env: identical world,
    observations equal to mpe2's observe(), rewards equal to mpe2's (spread: 2x its local_ratio=0.5 mix)."""
    kwargs, _, make_ref = CASES[case]
    env = MPEEnv(**kwargs, physics=physics, seed=5, common_reward=False)
    ref = make_ref()
    env.reset()
    ref.reset(seed=5)
    sc = env._sc
    rng = np.random.default_rng(1)
    for _ in range(30):
        acts = rng.integers(0, 5, env.n_agents).tolist()
        rewards, _, _ = env.step(acts)
        joint = [None] * len(ref.world.agents)
        for k, a in zip(sc.controlled, acts):
            joint[k] = a
        for k, a in zip(sc.fixed, env.last_fixed_actions):
            joint[k] = a
        for a in joint:
            ref.step(a)
        for ours, theirs in zip(env._world.agents, ref.world.agents):
            assert np.array_equal(ours.state.p_pos, theirs.state.p_pos)
            assert np.array_equal(ours.state.p_vel, theirs.state.p_vel)
        names = [ref.world.agents[k].name for k in sc.controlled]
        np.testing.assert_array_equal(np.array(env.get_obs()), np.array([ref.observe(a) for a in names]))
        ref_rewards = np.array([ref.rewards[a] for a in names]) * (2 if kwargs["scenario"] == "spread" else 1)
        np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6, atol=1e-6)


def test_numpy_physics_matches_with_many_contacts():
    """15 agents squeezed together: many contact forces at once, still bit-identical to mpe2's World.step."""
    envs = [MPEEnv(scenario="spread", N=15, physics=p, seed=2) for p in ("numpy", "mpe2")]
    for env in envs:
        env.reset()
        for a in env._world.agents:
            a.state.p_pos *= 0.3
    rng = np.random.default_rng(0)
    for _ in range(20):
        acts = rng.integers(0, 5, 15)
        outs = [env.step(acts) for env in envs]
        assert outs[0][0] == pytest.approx(outs[1][0], rel=1e-12)
        np.testing.assert_array_equal(envs[0].get_state(), envs[1].get_state())
    assert outs[0][2]["collisions"] > 20


@pytest.mark.parametrize("case", list(CASES))
def test_schema_fields_hold_the_world(case):
    kwargs, _, _ = CASES[case]
    env = make_env("mpe", seed=3, **kwargs)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(6):
        env.step(rng.integers(0, 5, env.n_agents))
    check_schema(env.state_schema(), env.get_state_size())
    sc, world = env._sc, env._world
    L = [lm.state.p_pos for lm in world.landmarks]
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    scen = kwargs["scenario"]
    for i, k in enumerate(sc.controlled):
        me = world.agents[k].state
        others = [a for j, a in enumerate(world.agents) if j != k]
        rel_others = np.concatenate([a.state.p_pos - me.p_pos for a in others])
        if scen == "adversary":
            goal = world.agents[0].goal_a.state.p_pos
            np.testing.assert_array_equal(value(env, f"agent_{i}.goal_rel"), f32(goal - me.p_pos))
            np.testing.assert_array_equal(value(env, f"agent_{i}.landmarks_rel"),
                                          f32(np.concatenate([p - me.p_pos for p in L])))
            np.testing.assert_array_equal(value(env, f"agent_{i}.others_rel"), f32(rel_others))
            continue
        who = "agent" if scen == "spread" else "predator"
        np.testing.assert_array_equal(value(env, f"{who}_{i}.pos"), f32(me.p_pos))
        np.testing.assert_array_equal(value(env, f"{who}_{i}.vel"), f32(me.p_vel))
        np.testing.assert_array_equal(value(env, f"{who}_{i}.others_rel"), f32(rel_others))
        lm_field = f"{who}_{i}.{'landmarks_rel' if scen == 'spread' else 'obstacles_rel'}"
        if L:
            np.testing.assert_array_equal(value(env, lm_field), f32(np.concatenate([p - me.p_pos for p in L])))
        else:
            assert lm_field not in fields_of(env)
        if scen == "spread":
            assert not value(env, f"agent_{i}.others_comm").any()
        else:
            prey = [a for a in world.agents if not a.adversary]
            np.testing.assert_array_equal(value(env, f"predator_{i}.prey_vel"),
                                          f32(np.concatenate([a.state.p_vel for a in prey])))


def test_spread_fields_follow_a_moved_agent():
    env = make_env("mpe", scenario="spread", N=3, seed=0)
    env.reset()
    before = value(env, "agent_1.pos").copy()
    for _ in range(5):
        env.step([0, 2, 0])  # agent 1 pushes right
    after = value(env, "agent_1.pos")
    assert after[0] > before[0] + 0.1 and after[1] == pytest.approx(before[1], abs=1e-6)
    assert value(env, "agent_1.vel")[0] > 0
    # agent 0 sees agent 1 (its others_rel starts with agent 1) where agent 1 is
    np.testing.assert_allclose(value(env, "agent_0.others_rel")[:2], after - value(env, "agent_0.pos"), atol=1e-6)


def place(env, positions):
    for agent, p in zip(env._world.agents, positions):
        agent.state.p_pos = np.array(p, dtype=np.float64)
        agent.state.p_vel = np.zeros(2)


def test_spread_reward_composition():
    env = make_env("mpe", scenario="spread", N=3, seed=0, common_reward=False)
    env.reset()
    L = [np.array([-0.8, 0.0]), np.array([0.0, 0.0]), np.array([0.8, 0.0])]
    for lm, p in zip(env._world.landmarks, L):
        lm.state.p_pos = p.copy()
    env._sc.on_reset()
    # every landmark covered, nobody touching: 0 (positions do not move this step: velocity 0)
    place(env, L)
    rewards, _, info = env.step([0, 0, 0])
    np.testing.assert_allclose(rewards, 0, atol=1e-12)
    assert info["occupied_landmarks"] == 3 and info["collisions"] == 0
    # agent 1 moves next to agent 0 (0.2 apart < 0.3): landmark 1's closest agent is now 0.6 away, 0 and 1 touch
    place(env, [L[0], [-0.6, 0.0], L[2]])
    rewards, _, info = env.step([0, 0, 0])
    np.testing.assert_allclose(rewards, [-0.6 - 1, -0.6 - 1, -0.6], rtol=1e-6)
    assert info["collisions"] == 1
    team = make_env("mpe", scenario="spread", N=3, seed=0)
    assert "2 x (number of touching pairs)" in team.reward_description()
    mean = make_env("mpe", scenario="spread", N=3, reward_scalarisation="mean", seed=0)
    for e in (team, mean):
        e.reset()
        for lm, p in zip(e._world.landmarks, L):
            lm.state.p_pos = p.copy()
        e._sc.on_reset()
        place(e, [L[0], [-0.6, 0.0], L[2]])
    assert team.step([0, 0, 0])[0] == pytest.approx(3 * -0.6 - 2)
    assert mean.step([0, 0, 0])[0] == pytest.approx((3 * -0.6 - 2) / 3)


def test_spread_local_ratio_is_mpe2s_mix():
    env = make_env("mpe", scenario="spread", N=3, local_ratio=0.25, seed=0, common_reward=False)
    env.reset()
    L = [lm.state.p_pos.copy() for lm in env._world.landmarks]
    place(env, [L[0], L[0] + [0.1, 0.0], L[2]])
    rewards, _, _ = env.step([0, 0, 0])
    g = -np.linalg.norm(L[1] - np.array([L[0], L[0] + [0.1, 0.0], L[2]]), axis=1).min()
    np.testing.assert_allclose(rewards, [0.75 * g - 0.25, 0.75 * g - 0.25, 0.75 * g], rtol=1e-6)


def test_tag_reward_counts_contacts():
    env = make_env("mpe", scenario="world", seed=0)  # 3 predators, 3 prey
    env.reset()
    # predators 0 and 1 touch prey 0 (0.1 < 0.125), predator 2 touches prey 1; prey 2 far away
    place(env, [[0.0, 0.0], [0.1, 0.0], [-0.5, 0.5], [0.05, 0.0], [-0.5, 0.6], [0.9, -0.9]])
    reward, _, info = env.step([0, 0, 0])
    assert reward == 3 * 10 * 3 and info["tags"] == 3
    reward, _, info = env.step([0, 0, 0])
    assert info["tags"] >= 3  # cumulative over the episode
    per_agent = make_env("mpe", scenario="world", seed=0, common_reward=False)
    per_agent.reset()
    place(per_agent, [[0.0, 0.0], [0.5, 0.5], [-0.5, 0.5], [0.05, 0.0], [-0.9, 0.9], [0.9, -0.9]])
    rewards, _, _ = per_agent.step([0, 0, 0])
    assert rewards.dtype == np.float32 and rewards.tolist() == [10.0, 10.0, 10.0]


def test_adversary_reward_is_distance_difference():
    env = make_env("mpe", scenario="adversary", seed=0)
    env.reset()
    goal = env._world.agents[0].goal_a.state.p_pos.copy()
    place(env, [goal + [0.0, 0.5], goal, goal + [0.3, 0.4]])  # adversary 0.5 away, agent 0 on the goal
    reward, _, info = env.step([0, 0])
    assert reward == pytest.approx(2 * 0.5)
    assert info["adversary_goal_dist"] == pytest.approx(0.5) and info["good_goal_dist"] == pytest.approx(0.0)


def test_heuristic_prey_flees_and_stays_in_bounds():
    flee = make_env("mpe", scenario="tag", seed=0)._sc.flee
    predators = np.array([[0.0, 0.0], [-0.9, -0.9], [0.9, 0.9]])
    assert flee(np.array([0.3, 0.05]), predators) == 2  # nearest predator on its left: move right
    assert flee(np.array([0.05, -0.3]), predators) == 3  # predator above: move down
    # cornered at the right edge with the predator on its left: no move further right
    assert flee(np.array([0.85, 0.5]), np.array([[0.6, 0.5]])) != 2


def test_heuristic_adversary_heads_for_the_occupied_landmark():
    chase = make_env("mpe", scenario="adversary", seed=0)._sc.chase
    landmarks = np.array([[0.5, 0.0], [-0.5, 0.8]])
    good = np.array([[0.55, 0.05], [0.0, -0.9]])  # agent 0 sits on landmark 0
    assert chase(np.array([-0.5, 0.0]), np.zeros(2), good, landmarks) == 2  # move right
    assert chase(np.array([0.5, 0.6]), np.zeros(2), good, landmarks) == 3  # move down
    assert chase(np.array([0.5, 0.0]), np.zeros(2), good, landmarks) == 0  # already there
    assert chase(np.array([0.3, 0.0]), np.array([1.0, 0.0]), good, landmarks) == 1  # brakes: overshooting


@pytest.mark.parametrize("kwargs", [dict(scenario="tag"), dict(scenario="world"), dict(scenario="adversary"),
                                    dict(scenario="adversary", adversary_policy="random")])
def test_fixed_policies_are_reproducible_under_seeding(kwargs):
    def rollout(seed):
        env = make_env("mpe", seed=seed, max_cycles=8, **kwargs)
        trace = []
        for _ in range(2):  # the second episode continues the RNGs
            env.reset()
            for t in range(8):
                reward, _, _ = env.step([t % 5] * env.n_agents)
                trace.append((tuple(env.last_fixed_actions), reward, env.get_state().tobytes()))
        return trace

    a, b = rollout(11), rollout(11)
    assert a == b
    assert rollout(12) != a
    if kwargs.get("adversary_policy") == "random" or kwargs["scenario"] == "world":
        assert len({t[0] for t in a}) > 1  # the random policy does vary


def test_seed_method_reseeds_the_next_reset():
    env = make_env("mpe", scenario="world", seed=4)
    first = env.reset()[1].copy()
    env.step([1, 2, 3])
    assert not np.array_equal(env.reset()[1], first)
    env.seed(4)
    np.testing.assert_array_equal(env.reset()[1], first)


def test_episode_limit_is_a_truncation():
    env = make_env("mpe", scenario="spread", max_cycles=4, seed=0)
    for _ in range(2):
        env.reset()
        for t in range(1, 5):
            _, terminated, info = env.step([0, 1, 2])
            assert terminated is False
            assert info.get("episode_limit", False) == (t == 4)


def test_descriptions():
    env = make_env("mpe", scenario="tag", seed=0)
    env.reset()
    assert len(env.action_meanings()) == 5 and env.action_meanings()[1].startswith("move_left")
    assert "+10" in env.reward_description() and "30 per contact" in env.reward_description()
    prompt = env.describe_task()
    assert "predator_0.prey_vel" in prompt and "flee" in prompt
    text = env.describe_state()
    assert "prey 0" in text and "obstacle 1" in text
    world = make_env("mpe", scenario="world", seed=0)
    assert "uniformly random" in world.task_summary() and "CODI" in world.task_summary()
    spread = make_env("mpe", scenario="spread", N=3, seed=0)
    spread.reset()
    s = spread.describe_state()
    assert s.count("landmark") == 3 and "touching pairs" in s
    adv = make_env("mpe", scenario="adversary", seed=0)
    adv.reset()
    assert "(goal)" in adv.describe_state()


def test_errors():
    with pytest.raises(TypeError, match="unknown env argument 'n_agents' for mpe; valid: .*scenario"):
        make_env("mpe", scenario="spread", n_agents=3)
    with pytest.raises(ValueError, match="unknown scenario"):
        make_env("mpe", scenario="push")
    with pytest.raises(ValueError, match=r"\['N'\] do not apply to scenario 'tag'"):
        make_env("mpe", scenario="tag", N=4)
    with pytest.raises(ValueError, match="prey_policy must be one of"):
        make_env("mpe", scenario="tag", prey_policy="smart")
    with pytest.raises(ValueError, match="reward_scalarisation"):
        make_env("mpe", scenario="spread", reward_scalarisation="max")
    with pytest.raises(ValueError, match="max_cycles"):
        make_env("mpe", scenario="spread", max_cycles=0)
    with pytest.raises(ValueError, match="physics"):
        make_env("mpe", scenario="spread", physics="jax")
    env = make_env("mpe", scenario="spread", N=3)
    env.reset()
    with pytest.raises(ValueError, match="expected 3 actions"):
        env.step([0, 1])
    with pytest.raises(ValueError, match="0..4"):
        env.step([0, 1, 5])


@pytest.mark.parametrize("name,scenario,n", [("mpe_spread", "spread", 3), ("mpe_spread_6", "spread", 6),
                                             ("mpe_tag", "tag", 3), ("mpe_adversary", "adversary", 2),
                                             ("mpe_world", "world", 3)])
def test_configs_build_the_env(name, scenario, n):
    with open(os.path.join(CONFIG_DIR, f"{name}.yaml")) as f:
        cfg = yaml.safe_load(f)
    env = make_env(cfg["env"], **cfg["env_args"], seed=0)
    assert isinstance(env, MPEEnv) and env.scenario == scenario and env.n_agents == n
    assert env.episode_limit == 25
