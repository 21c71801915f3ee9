"""The `lca` shaper (shapers/lca/shaper.py): F_i = sigma(o'_i) - sigma(o_i), zero on stay steps, the gamma / terminal
options keep a tabular MDP's optimal policy, add vs replace, batched groups, provenance and resume checks."""
import logging

import numpy as np
import pytest
import torch as th
from lca_helpers import one_hot, random_potential, shaper_args

from envs import env_class
from shapers import REGISTRY
from shapers.lca.shaper import LCAShaper
from shapers.lca.train import load_artifact


def make(folder, n_agents=1, obs_dim=4, stay=None, **lca):
    return LCAShaper(shaper_args(str(folder), **lca), {"n_agents": n_agents, "obs_shape": obs_dim,
                                                        "stay_action": stay})


def trajectory(T=12, n=2, O=4, seed=0):
    rng = np.random.default_rng(seed)
    obs = th.as_tensor(rng.normal(size=(T + 1, n, O)), dtype=th.float32)
    return obs[:-1], obs[1:]


def test_it_is_registered_and_per_agent():
    assert REGISTRY["lca"] is LCAShaper and LCAShaper.per_agent


def test_without_zeroing_the_shaped_rewards_telescope(tmp_path):
    folder = random_potential(tmp_path / "p", 4, n_agents=2, out_scale=10.0)
    shaper = make(folder, n_agents=2, mode="replace")
    obs, next_obs = trajectory()
    actions = th.zeros(len(obs), 2, dtype=th.long)
    F = shaper.shape(obs, next_obs, actions, th.zeros(len(obs), 2), th.zeros(len(obs), dtype=th.bool))
    sigma = load_artifact(folder).models["all"]
    with th.no_grad():
        expected = sigma(next_obs[-1]) - sigma(obs[0])
    assert F.shape == (12, 2) and th.allclose(F.sum(0), expected, atol=1e-5)
    assert F.abs().min() > 0


def test_stay_steps_get_no_shaped_reward(tmp_path):
    shaper = make(random_potential(tmp_path / "p", 4, n_agents=2, out_scale=10.0), n_agents=2, stay=0,
                  mode="replace")
    obs, next_obs = trajectory(T=50)
    actions = th.as_tensor(np.random.default_rng(1).integers(0, 3, (50, 2)))
    F = shaper.shape(obs, next_obs, actions, th.zeros(50, 2), th.zeros(50, dtype=th.bool))
    assert (F[actions == 0] == 0).all() and (F[actions != 0] != 0).all() and (actions == 0).sum() > 5


def test_no_stay_action_warns_that_nothing_is_zeroed(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        make(random_potential(tmp_path / "p", 4), stay=None)
    assert "nothing is zeroed" in caplog.text


def test_the_stay_action_comes_from_the_env_class_when_the_setup_does_not_pass_it(tmp_path):
    folder = random_potential(tmp_path / "p", 4, env="two_switch")
    shaper = LCAShaper(shaper_args(str(folder), env="two_switch"), {"n_agents": 1, "obs_shape": 4})
    assert shaper.stay_action == env_class("two_switch").stay_action == 0


def test_a_constant_potential_leaves_the_env_reward_as_it_is(tmp_path):
    shaper = make(random_potential(tmp_path / "p", 4, n_agents=2, constant=3.0), n_agents=2, mode="add", coef=100.0)
    obs, next_obs = trajectory()
    reward = th.as_tensor(np.random.default_rng(2).normal(size=(12, 2)), dtype=th.float32)
    out = shaper.shape(obs, next_obs, th.ones(12, 2, dtype=th.long), reward, th.zeros(12, dtype=th.bool))
    assert th.equal(out, reward)


def test_add_replace_and_coef(tmp_path):
    folder = random_potential(tmp_path / "p", 4, n_agents=2, out_scale=5.0)
    obs, next_obs = trajectory()
    args = (obs, next_obs, th.ones(12, 2, dtype=th.long))
    reward, terminal = th.full((12, 2), 0.5), th.zeros(12, dtype=th.bool)
    F = make(folder, n_agents=2, mode="replace", coef=1.0).shape(*args, reward, terminal)
    assert th.allclose(make(folder, n_agents=2, mode="replace", coef=3.0).shape(*args, reward, terminal), 3 * F)
    assert th.allclose(make(folder, n_agents=2, mode="add", coef=2.0).shape(*args, reward, terminal), 0.5 + 2 * F)


def test_terminal_potential_zero_and_gamma(tmp_path):
    folder = random_potential(tmp_path / "p", 4, n_agents=2, out_scale=5.0)
    obs, next_obs = trajectory()
    terminal = th.zeros(12, dtype=th.bool)
    terminal[-1] = True
    sigma = load_artifact(folder).models["all"]
    with th.no_grad():
        s, s_next = sigma(obs), sigma(next_obs)
    shaper = make(folder, n_agents=2, mode="replace", gamma_shaping=True, terminal_potential="zero")
    F = shaper.shape(obs, next_obs, th.ones(12, 2, dtype=th.long), th.zeros(12, 2), terminal)
    assert th.allclose(F[:-1], 0.99 * s_next[:-1] - s[:-1], atol=1e-6) and th.allclose(F[-1], -s[-1], atol=1e-6)


def test_groups_are_batched_and_shared_models_read_no_identity(tmp_path):
    # 3 agents: a shared group {0, 2} that drops the identity dims 1, 2, and a one-agent group {1} that keeps them
    folder = random_potential(tmp_path / "p", 5, n_agents=3, groups=["a", "b"], agent_groups=[0, 1, 0],
                              identity_dims=[1, 2], out_scale=3.0, scale=2.0)
    shaper = make(folder, n_agents=3, obs_dim=5, mode="replace")
    obs, next_obs = trajectory(T=20, n=3, O=5)
    F = shaper.shape(obs, next_obs, th.ones(20, 3, dtype=th.long), th.zeros(20, 3), th.zeros(20, dtype=th.bool))
    models = load_artifact(folder).models
    with th.no_grad():
        for i, (name, dims) in enumerate([("a", [0, 3, 4]), ("b", [0, 1, 2, 3, 4]), ("a", [0, 3, 4])]):
            expected = (models[name](next_obs[:, i, dims]) - models[name](obs[:, i, dims])) / 2.0
            assert th.allclose(F[:, i], expected, atol=1e-6)
    changed = obs.clone()
    changed[:, :, 1:3] += 7.0  # identity fields: the shared group's agents do not notice
    G = shaper.shape(changed, next_obs, th.ones(20, 3, dtype=th.long), th.zeros(20, 3), th.zeros(20, dtype=th.bool))
    assert th.equal(G[:, [0, 2]], F[:, [0, 2]]) and not th.equal(G[:, 1], F[:, 1])


def value_iteration(P, R, terminal, gamma, iters=2000):
    """Optimal Q of a tabular MDP: P [S, A, S'], R [S, A]; terminal states have value 0."""
    V = np.zeros(P.shape[0])
    for _ in range(iters):
        Q = R + gamma * P @ np.where(terminal, 0.0, V)
        V = Q.max(1)
    return Q


def test_gamma_shaping_with_a_zero_terminal_potential_keeps_the_optimal_policy(tmp_path):
    rng = np.random.default_rng(3)
    S, A, gamma = 7, 3, 0.9
    terminal = np.zeros(S, bool)
    terminal[-1] = True
    P = rng.dirichlet(np.full(S, 0.3), (S, A))
    R = rng.normal(0, 0.2, (S, A))
    Q = value_iteration(P, R, terminal, gamma)
    s, a, s2 = (x.ravel() for x in np.meshgrid(np.arange(S), np.arange(A), np.arange(S), indexing="ij"))
    obs, next_obs = (th.as_tensor(one_hot(x, S))[:, None] for x in (s, s2))
    live = ~terminal

    def optimal_policy_kept(folder, **options):
        shaper = make(folder, obs_dim=S, mode="add", gamma=gamma, **options)
        shaped = shaper.shape(obs, next_obs, th.as_tensor(a)[:, None], th.as_tensor(R[s, a])[:, None].float(),
                              th.as_tensor(terminal[s2])).double().numpy().reshape(S, A, S)
        Q_shaped = value_iteration(P, (P * shaped).sum(-1), terminal, gamma)
        assert np.abs(Q_shaped - Q)[live].max() > 0.5  # the shaping is strong
        return bool((Q_shaped.argmax(1) == Q.argmax(1))[live].all())

    folders = [random_potential(tmp_path / f"p{seed}", S, seed=seed, out_scale=50.0) for seed in range(5)]
    assert all(optimal_policy_kept(f, gamma_shaping=True, terminal_potential="zero") for f in folders)
    # the other forms are not invariant: the same potentials change this MDP's optimal policy
    assert not all(optimal_policy_kept(f, gamma_shaping=False, terminal_potential="zero") for f in folders)
    assert not all(optimal_policy_kept(f, gamma_shaping=True, terminal_potential="keep") for f in folders)


def test_nan_scores_are_refused(tmp_path):
    shaper = make(random_potential(tmp_path / "p", 4))
    obs, next_obs = trajectory(n=1)
    obs[3, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        shaper.shape(obs, next_obs, th.ones(12, 1, dtype=th.long), th.zeros(12, 1), th.zeros(12, dtype=th.bool))


def test_a_missing_or_foreign_potential_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lca.potential=.*--config=lca_potential"):
        make("")
    folder = random_potential(tmp_path / "p", 4, n_agents=2)
    with pytest.raises(ValueError, match="agent count: trained for 2 agents, this run has 3"):
        make(folder, n_agents=3)
    with pytest.raises(ValueError, match="env: trained on chain, this run has two_switch"):
        LCAShaper(shaper_args(str(folder), env="two_switch"), {"n_agents": 2, "obs_shape": 4, "stay_action": 0})


def test_provenance_and_resume(tmp_path):
    a = make(random_potential(tmp_path / "a", 4, seed=0))
    b = make(random_potential(tmp_path / "b", 4, seed=1))
    record = a.provenance()
    assert record["shaper"] == "lca" and len(record["potential_sha256"]) == 64
    assert {k: record[k] for k in ("mode", "coef", "gamma_shaping", "terminal_potential")} == \
        {"mode": "add", "coef": 1.0, "gamma_shaping": False, "terminal_potential": "keep"}
    a.check_resume(record)
    make(tmp_path / "a").check_resume(record)  # the same folder loaded again
    with pytest.raises(ValueError, match=f"{record['potential_sha256']}.*{b.potential.sha256}"):
        b.check_resume(record)
    with pytest.raises(ValueError, match="shaper settings"):
        make(tmp_path / "a", coef=2.0).check_resume(record)


def test_bad_options_are_refused(tmp_path):
    folder = random_potential(tmp_path / "p", 4)
    with pytest.raises(ValueError, match="lca.mode"):
        make(folder, mode="sum")
    with pytest.raises(ValueError, match="lca.terminal_potential"):
        make(folder, terminal_potential="drop")
