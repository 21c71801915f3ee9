"""The obs hooks CODI stitching uses (state_from_obs, avail_actions_from_obs, terminal_from_obs) reproduce the env's
own state, available actions and terminals on real rollouts; envs without them are refused by name. The optional
hooks: reward_from_obs reproduces step rewards, view_gap_from_obs is 0 on real observations and measures a view that
disagrees."""
import numpy as np
import pytest

from envs import make_env
from envs.multiagentenv import ObsHooksUnsupported


def rollout(env, policy, rng):
    """One episode: obs [T+1, n, O], states [T+1, S], avail [T+1, n, A], actions [T+1, n] (last row 0), terminal
    flags per observation [T+1] (true on the observation a terminating step produced)."""
    obs, state = env.reset()
    O, S, A, acts, term = [np.array(obs)], [np.array(state)], [np.array(env.get_avail_actions())], [], [False]
    for _ in range(env.episode_limit):
        a = policy(env, rng)
        _, done, info = env.step(a)
        acts.append(a)
        O.append(np.array(env.get_obs()))
        S.append(np.array(env.get_state()))
        A.append(np.array(env.get_avail_actions()))
        term.append(bool(done))
        if done or info.get("episode_limit"):
            break
    acts.append([0] * env.n_agents)
    return np.stack(O), np.stack(S), np.stack(A), np.array(acts), np.array(term)


def random_policy(env, rng):
    return [int(rng.integers(env.get_total_actions())) for _ in range(env.n_agents)]


def lbf_policy(target_last):
    """Mostly head for one food (the first or last in row-major order, so either end of the slots empties first) and
    load it together, sometimes a random available action: episodes reach LBF's terminal (all food picked up)."""
    def act(env, rng):
        game = env._unwrapped
        foods = list(zip(*np.nonzero(game.field)))
        avail = np.array(env.get_avail_actions())
        actions = []
        for i, player in enumerate(game.players):
            if not foods or rng.random() < 0.2:
                actions.append(int(rng.choice(np.flatnonzero(avail[i]))))
                continue
            (fr, fc), (r, c) = foods[-1 if target_last else 0], player.position
            if abs(fr - r) + abs(fc - c) == 1:
                actions.append(5)  # LOAD
                continue
            towards = [a for a, ok in ((1, fr < r), (2, fr > r), (3, fc < c), (4, fc > c)) if ok and avail[i, a]]
            actions.append(int(rng.choice(towards or list(np.flatnonzero(avail[i])))))
        return actions
    return act


@pytest.mark.parametrize("scenario, extra", [("spread", {"N": 3}), ("world", {}), ("adversary", {})])
def test_mpe_hooks_reproduce_rollouts(scenario, extra):
    env = make_env("mpe", scenario=scenario, max_cycles=25, **extra)
    for seed in range(3):
        env.seed(seed)
        obs, states, avail, actions, term = rollout(env, random_policy, np.random.default_rng(seed))
        assert np.array_equal(env.state_from_obs(obs), states)
        assert np.array_equal(env.state_from_obs(obs[None], actions[None])[0], states)  # any leading dims
        assert np.array_equal(env.avail_actions_from_obs(obs), avail)
        assert not term.any() and not env.terminal_from_obs(obs).any()
    with pytest.raises(ValueError, match=rf"\[\.\.\., {env.n_agents}, {obs.shape[-1]}\], got shape"):
        env.state_from_obs(obs[..., :-1])


@pytest.mark.parametrize("key", ["Foraging-8x8-2p-2f-coop-v3", "Foraging-8x8-3p-3f-v3", "Foraging-6x6-2p-3f-v3"])
def test_lbf_full_sight_hooks_reproduce_rollouts(key):
    env = make_env("lbf", key=key, time_limit=50)
    terminals = 0
    for seed in range(6):
        env.seed(seed)
        obs, states, avail, actions, term = rollout(env, lbf_policy(target_last=seed % 2 == 1),
                                                    np.random.default_rng(seed))
        assert np.array_equal(env.state_from_obs(obs, actions), states), f"seed {seed}"
        assert np.array_equal(env.avail_actions_from_obs(obs), avail), f"seed {seed}"
        assert np.array_equal(env.terminal_from_obs(obs), term), f"seed {seed}"
        terminals += int(term.any())
        # generated observations are off the integer grid: the hooks round them to the same answers
        noisy = obs + np.random.default_rng(seed).uniform(-0.3, 0.3, obs.shape)
        assert np.array_equal(env.state_from_obs(noisy, actions), states)
        assert np.array_equal(env.avail_actions_from_obs(noisy), avail)
        assert np.array_equal(env.terminal_from_obs(noisy), term)
    assert terminals >= 3  # the terminal and the food slots emptying were exercised, not only time limits


def test_lbf_batched_episodes_and_obs_layout():
    env = make_env("lbf", key="Foraging-8x8-2p-2f-coop-v3", time_limit=10)
    runs = []
    for seed in range(2):
        env.seed(seed)
        runs.append(rollout(env, random_policy, np.random.default_rng(seed)))
    obs, states, _, actions, _ = (np.stack(x) for x in zip(*runs))  # [2, 11, ...]: time limit, same lengths
    assert np.array_equal(env.state_from_obs(obs, actions), states)
    with pytest.raises(ValueError, match="actions"):
        env.state_from_obs(obs)
    flat = make_env("lbf", key="Foraging-8x8-2p-2f-coop-v3", time_limit=10, state="obs")
    flat.seed(0)
    obs, states, *_ = rollout(flat, random_policy, np.random.default_rng(0))
    assert np.array_equal(flat.state_from_obs(obs), states)


def test_lbf_partial_sight_refused_naming_sight():
    env = make_env("lbf", key="Foraging-2s-8x8-2p-2f-coop-v3", time_limit=10)
    obs, _ = env.reset()
    for hook in (env.avail_actions_from_obs, env.terminal_from_obs, lambda o: env.state_from_obs(o[None], None)):
        with pytest.raises(ObsHooksUnsupported, match=r"sight=2.*-2s"):
            hook(np.array(obs))


def test_env_without_hooks_refused_by_name():
    env = make_env("matrix_game")
    obs = np.array(env.reset()[0])
    for hook in ("state_from_obs", "avail_actions_from_obs", "terminal_from_obs"):
        with pytest.raises(NotImplementedError, match=rf"{hook}: env MatrixGame .*MPE.*full-sight LBF"):
            getattr(env, hook)(obs)


def towards_each_other(env, rng):
    """Every agent heads for agent 0 (spread's moves 1-4: -x, +x, -y, +y), so random episodes also collide."""
    obs = np.array(env.get_obs())
    actions = [int(rng.integers(5))]
    for i in range(1, env.n_agents):
        dx, dy = obs[0, 2:4] - obs[i, 2:4]
        actions.append((2 if dx > 0 else 1) if abs(dx) > abs(dy) else (4 if dy > 0 else 3))
    return actions


@pytest.mark.parametrize("extra", [{"N": 3}, {"N": 4, "common_reward": False}, {"N": 3, "local_ratio": 0.5},
                                   {"N": 3, "reward_scalarisation": "mean"}])
def test_spread_reward_from_obs_reproduces_step_rewards(extra):
    env = make_env("mpe", scenario="spread", max_cycles=25, **extra)
    contacts = 0
    for seed in range(3):
        env.seed(seed)
        rng = np.random.default_rng(seed)
        obs, rewards = [np.array(env.reset()[0])], []
        for _ in range(env.episode_limit):
            r, done, info = env.step(towards_each_other(env, rng) if seed else random_policy(env, rng))
            obs.append(np.array(env.get_obs()))
            rewards.append(r)
            if done or info.get("episode_limit"):
                break
        obs = np.stack(obs)
        np.testing.assert_allclose(env.reward_from_obs(obs[1:]), np.array(rewards), atol=1e-4)  # float32 obs
        closest, own = env.spread_terms_from_obs(obs[1:])
        assert own.sum() / 2 == info["collisions"] and closest.shape == own.shape == (len(rewards), env.n_agents)
        contacts += info["collisions"]
    assert contacts > 0  # the check covered the collision term


def test_reward_from_obs_refused_by_name():
    from envs.multiagentenv import NoRewardFromObs

    for env, name in ((make_env("mpe", scenario="world", max_cycles=25), "MPEEnv"),
                      (make_env("lbf", key="Foraging-8x8-2p-2f-coop-v3", time_limit=50), "ForagingEnv")):
        obs = np.zeros((2, env.n_agents, env.get_obs_size()))
        with pytest.raises(NoRewardFromObs, match=rf"reward_from_obs: env {name}.*MPE spread has it"):
            env.reward_from_obs(obs)


def test_view_gap_is_zero_on_real_observations_and_measures_a_disagreeing_view():
    spread = make_env("mpe", scenario="spread", N=3, max_cycles=25)
    spread.seed(0)
    obs = rollout(spread, towards_each_other, np.random.default_rng(0))[0]  # [26, 3, 18]
    assert obs.shape[-1] == 18 and spread.view_gap_from_obs(obs).max() < 1e-6
    moved = obs.copy()
    moved[4, 2, 4 + 2 * 1] += 0.3  # agent 2 puts landmark 1 0.3 further along x than agent 0 does
    moved[7, 1, 4 + 6 + 3] -= 0.4  # agent 1 puts agent 2 (its teammates: 0, 2) 0.4 lower than agent 2 is
    moved[9, 0, 4] += 0.5          # agent 0 (the reference) moves landmark 0: the others now disagree with it
    gap = spread.view_gap_from_obs(moved[None])[0]  # any leading dims
    np.testing.assert_allclose(gap[[4, 7, 9]], [0.3, 0.4, 0.5], atol=1e-6)
    assert np.delete(gap, [4, 7, 9]).max() < 1e-6

    lbf = make_env("lbf", key="Foraging-8x8-3p-3f-v3", time_limit=50)
    lbf.seed(1)
    obs = rollout(lbf, lbf_policy(target_last=False), np.random.default_rng(1))[0]
    assert lbf.view_gap_from_obs(obs).max() == 0.0
    moved = obs.copy()
    moved[2, 1, 3 * 3 + 3 + 1] += 2.2  # agent 1's view of agent 0 (listed after itself): col 2.2 cells off
    # the grid keeps the rounded mean of the 3 views: agent 0's col moves by rint(2.2 / 3) = 1, so views differ by
    # 1.2 (agent 1) and 1 (the others)
    np.testing.assert_allclose(lbf.view_gap_from_obs(moved)[[1, 2, 3]], [0.0, 1.2, 0.0], atol=1e-6)


def test_view_projection_is_identity_on_real_views_and_puts_generated_ones_in_one_world():
    spread = make_env("mpe", scenario="spread", N=3, max_cycles=25)
    spread.seed(0)
    obs = rollout(spread, towards_each_other, np.random.default_rng(0))[0]  # [26, 3, 18]
    M = spread.view_projection()
    n, O = obs.shape[1:]
    assert M.shape == (n * O, n * O) and np.allclose(M @ M, M)

    def project(o):
        return (o.reshape(len(o), -1) @ M.T).reshape(o.shape)

    np.testing.assert_allclose(project(obs), obs, atol=1e-5)  # real views already agree
    rng = np.random.default_rng(1)
    noisy = obs + rng.normal(0, 0.2, obs.shape)  # each agent's view perturbed on its own
    fixed = project(noisy)
    assert spread.view_gap_from_obs(noisy).min() > 0.1 and spread.view_gap_from_obs(fixed).max() < 1e-6
    np.testing.assert_array_equal(fixed[..., :4], noisy[..., :4])  # velocity and position are the agent's own
    comm = 4 + 2 * n + 2 * (n - 1)
    np.testing.assert_array_equal(fixed[..., comm:], noisy[..., comm:])
    # a landmark lands where the agents place it on average
    L = spread.landmarks_from_obs(noisy).mean(-3)
    np.testing.assert_allclose(spread.landmarks_from_obs(fixed)[:, 1], L, atol=1e-9)


def test_view_gap_refused_by_name():
    from envs.multiagentenv import NoObsHook

    for env, name in ((make_env("mpe", scenario="world", max_cycles=25), "MPEEnv"),
                      (make_env("matrix_game"), "MatrixGame")):
        obs = np.zeros((2, env.n_agents, env.get_obs_size()))
        with pytest.raises(NoObsHook, match=rf"view_gap_from_obs: env {name}.*MPE spread"):
            env.view_gap_from_obs(obs)
        with pytest.raises(NoObsHook, match=rf"view_projection: env {name}.*MPE spread has it"):
            env.view_projection()
    partial = make_env("lbf", key="Foraging-2s-8x8-2p-2f-coop-v3", time_limit=10)
    with pytest.raises(ObsHooksUnsupported, match="sight=2"):
        partial.view_gap_from_obs(np.array(partial.reset()[0]))


@pytest.mark.parametrize("key", ["Foraging-8x8-2p-2f-coop-v3", "Foraging-8x8-3p-3f-v3"])
def test_lbf_snap_obs_is_identity_on_real_observations_and_puts_generated_ones_on_the_grid(key):
    env = make_env("lbf", key=key, time_limit=50)
    emptied = 0
    for seed in range(4):
        env.seed(seed)
        obs = rollout(env, lbf_policy(target_last=seed % 2 == 1), np.random.default_rng(seed))[0]
        assert np.array_equal(env.snap_obs(obs), obs), f"seed {seed}"  # foods gone from either end of the slots
        emptied += int((obs[-1, 0, 2::3][:env.n_food] == 0).any())
        noisy = obs + np.random.default_rng(seed).uniform(-0.3, 0.3, obs.shape)
        assert np.array_equal(env.snap_obs(noisy[None])[0], obs)  # any leading dims; back to the real ones
        # views that disagree by more than rounding: one grid, the views' rounded mean, in every agent's view
        wobbly = obs.copy()
        wobbly[:, 0, env.n_food * 3 + 1] += 1.4  # agent 0's own column, in its view only
        snapped = env.snap_obs(wobbly)
        assert env.view_gap_from_obs(snapped).max() == 0.0
        assert np.array_equal(env.snap_obs(snapped), snapped)
        assert np.array_equal(env.state_from_obs(snapped, np.zeros(snapped.shape[:2])),
                              env.state_from_obs(wobbly, np.zeros(snapped.shape[:2])))
    assert emptied >= 2
    # a food whose level rounds to 0 is gone: the foods left move up, row-major, as lbforaging lists them
    env.seed(0)
    first = np.array(env.reset()[0])
    fading = first.copy()
    fading[:, 2] = 0.4
    want = first.copy()
    m = env.n_food
    want[:, :3 * (m - 1)] = first[:, 3:3 * m]
    want[:, 3 * (m - 1):3 * m] = (-1, -1, 0)
    assert np.array_equal(env.snap_obs(fading), want)


def test_lbf_snap_obs_from_the_first_observation_keeps_lbfs_rules():
    env = make_env("lbf", key="Foraging-8x8-3p-3f-v3", time_limit=50)
    m = env.n_food
    env.seed(1)
    obs = rollout(env, lbf_policy(target_last=False), np.random.default_rng(1))[0]
    gone = np.flatnonzero((obs[:, 0, 2::3][:, :m] == 0).any(1))
    assert len(gone) and gone[0] > 2  # a food is collected during the episode
    assert np.array_equal(env.snap_obs(obs[1:], first=obs[0]), obs[1:])  # identity on real steps
    segments = np.stack([obs[t:t + 4] for t in range(0, len(obs) - 4, 3)])  # [S, 4, n, O]
    assert np.array_equal(env.snap_obs(segments[:, 1:], first=segments[:, 0]), segments[:, 1:])
    t = gone[0]  # the first observation with an empty food slot (lbforaging lists the foods left first)
    x = obs[t - 2:t + 3].copy()  # first = obs[t-2]; the steps t-1 .. t+2
    before, after = (set(map(tuple, o[0, :3 * m].reshape(m, 3))) for o in (x[0], obs[t]))
    (collected,) = before - after
    steps = x[1:].copy()
    last = slice(3 * (m - 1), 3 * m)  # the empty slot from step t on
    steps[2, :, last] = (0, 0, 1.2)  # a food appears at step t+1 where none was
    steps[3, :, last] = collected  # the collected food shows again at step t+2
    steps[:, :, 3 * m + 2::3] += 0.75  # every level of an agent, in every view, drifts by more than half a level
    got = env.snap_obs(steps, first=x[0])
    assert np.array_equal(got, obs[t - 1:t + 3])
    alone = env.snap_obs(steps)  # one observation at a time: the new food and the levels stay
    assert (alone[2, 0, 2:3 * m:3] > 0).sum() == m and (alone[:, 0, 3 * m + 2] != obs[t - 1:t + 3, 0, 3 * m + 2]).all()
    with pytest.raises(ValueError, match=r"first must be the observation before the steps"):
        env.snap_obs(steps, first=x[:2])


def test_snap_obs_refused_by_name():
    with pytest.raises(NotImplementedError, match="snap_obs: env .*full-sight LBF has it"):
        make_env("mpe", scenario="spread", N=3, max_cycles=25).snap_obs(np.zeros((3, 18)))
    env = make_env("lbf", key="Foraging-2s-8x8-2p-2f-coop-v3", time_limit=10)
    with pytest.raises(ObsHooksUnsupported, match=r"sight=2.*-2s"):
        env.snap_obs(np.array(env.reset()[0]))
