"""Per-agent rewards end to end (issue 16 §1): common_reward=False is stored as `reward` [n] with the env's team reward
beside it, both runners store the same rewards and log the team return (by reward_scalarisation), each agent's return
and success; PPO trains on them; team-reward learners are refused before anything is built."""
import json
import os
import re

import numpy as np
import pytest
import torch as th
from per_agent_game import NAME, register

from helpers import make_ctx, run_main, sacred_dir
from utils.config import ConfigError

TINY = ["t_max=200", "test_interval=100", "test_nepisode=3", "save_model=False", "use_tensorboard=False",
        "log_interval=100", "runner_log_interval=100", "learner_log_interval=100", "hidden_dim=8"]


class ObsPolicy:
    """A deterministic controller: agent i plays (elapsed steps + i + last action of agent 0) % 2, read from its
    observation, so every runner takes the same actions in the same states."""

    action_selector = None

    def __init__(self, limit):
        self.limit = limit

    def init_hidden(self, batch_size):
        pass

    def select_actions(self, batch, t_ep, t_env, bs=slice(None), test_mode=False):
        obs = batch["obs"][bs, t_ep]  # [b, n, 5]
        t = th.round(obs[..., -1] * self.limit).long()
        return (t + th.arange(obs.shape[1]) + obs[..., 1].long()) % 2


def play(runner, seed, policy_limit):
    runner.mac = ObsPolicy(policy_limit)
    return runner.run()


def episodes(seed, runner, **overrides):
    """The episode batches of 3 envs seeded seed, seed+1, seed+2: one parallel batch, or 3 episode-runner runs."""
    common = dict(env=NAME, env_args={"episode_limit": 6, "seeded_ends": True}, common_reward=False,
                  hidden_dim=8, **overrides)
    if runner == "parallel":
        ctx = make_ctx("ippo", "matrix_game", seed=seed, runner="parallel", batch_size_run=3, n_workers=1, **common)
        batches = [play(ctx.runner, seed, 6)]
        ctx.runner.close_env()
        return [batches[0][i:i + 1] for i in range(3)]
    out = []
    for i in range(3):
        ctx = make_ctx("ippo", "matrix_game", seed=seed + i, runner="episode", batch_size_run=1, **common)
        out.append(play(ctx.runner, seed + i, 6))
        ctx.runner.close_env()
    return out


@pytest.fixture
def opposed(monkeypatch):
    register(monkeypatch)


def test_the_batch_stores_per_agent_rewards_and_the_team_reward(opposed):
    ctx = make_ctx("ippo", "matrix_game", env=NAME, env_args={"episode_limit": 4}, common_reward=False,
                   runner="episode", batch_size_run=1, hidden_dim=8)
    batch = ctx.runner.run()
    ctx.runner.close_env()
    assert ctx.runner.shaper is None and batch["reward"].shape == (1, 5, 2) and batch["team_reward"].shape == (1, 5, 1)
    reward = batch["reward"][0, :4]
    assert th.equal(reward[:, 1], -reward[:, 0]) and reward.abs().sum() > 0  # the game is zero-sum per step
    assert th.equal(batch["team_reward"][0, :, 0], batch["reward"][0].sum(-1))  # reward_scalarisation: sum
    assert th.equal(batch["reward"][0, 4], th.zeros(2))  # nothing after the last transition


def test_common_rewards_keep_todays_batch(opposed):
    ctx = make_ctx("ippo", "matrix_game", env=NAME, env_args={"episode_limit": 4}, runner="episode",
                   batch_size_run=1, hidden_dim=8)
    batch = ctx.runner.run()
    ctx.runner.close_env()
    assert "team_reward" not in batch.scheme and batch["reward"].shape == (1, 5, 1)
    assert ctx.runner.per_agent_rewards is False and ctx.learner.reward_stats is None


def test_episode_and_parallel_runners_store_identical_per_agent_rewards(opposed):
    parallel, episode = episodes(7, "parallel"), episodes(7, "episode")
    lengths = []
    for p, e in zip(parallel, episode, strict=True):
        t = int(e["filled"].sum())
        lengths.append(t - 1)
        for key in ("reward", "team_reward", "obs", "terminated", "filled"):
            assert th.equal(p[key][:, :t], e[key][:, :t]), key
        # the episode runner also picks an action in the final state (unused); the parallel runner does not
        assert th.equal(p["actions"][:, :t - 1], e["actions"][:, :t - 1])
        assert p["filled"][:, t:].sum() == 0
    assert sorted(lengths) == [2, 3, 4]  # seeded ends (2 + seed % 3): the parallel runner's envs end apart


@pytest.mark.parametrize("scalarisation", ["sum", "mean"])
def test_logged_returns(opposed, scalarisation):
    ctx = make_ctx("ippo", "matrix_game", env=NAME, env_args={"episode_limit": 4, "offset": 0.5}, common_reward=False,
                   runner="parallel", batch_size_run=3, n_workers=1, hidden_dim=8, runner_log_interval=0,
                   reward_scalarisation=scalarisation)
    batch = ctx.runner.run()
    ctx.runner.close_env()
    stats = {k: v[-1][1] for k, v in ctx.logger.stats.items()}
    agent_returns = batch["reward"].double().sum(1)  # [3, 2]
    for i in range(2):
        assert stats[f"agent_{i}_return_mean"] == pytest.approx(agent_returns[:, i].mean().item())
    team = agent_returns.sum(-1) if scalarisation == "sum" else agent_returns.mean(-1)
    # every step's team reward is 2 * 0.5 (sum) or 0.5 (mean)
    expected = 4.0 if scalarisation == "sum" else 2.0
    assert stats["return_mean"] == pytest.approx(team.mean().item()) == pytest.approx(expected)
    assert stats["preferred_0_mean"] == pytest.approx((batch["actions"][:, :4, 0, 0] == 0).double().mean().item())
    assert "shaped_return_mean" not in stats


@pytest.mark.parametrize("alg", ["ippo", "mappo"])
@pytest.mark.parametrize("runner", ["episode", "parallel"])
def test_ppo_trains_on_individual_rewards_through_main(tmp_path, alg, runner):
    parallel = ["batch_size_run=3", "batch_size=3", "buffer_size=3"] if runner == "parallel" else [
        "batch_size_run=1", "batch_size=2", "buffer_size=2"]
    run_main(tmp_path, alg, "two_switch", f"runner={runner}", *parallel, *TINY, "common_reward=False",
             "env_args.individual_reward=True", "env_args.episode_limit=20", "standardise_rewards=True")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, alg, "two_switch"), "info.json")))
    for key in ("return_mean", "agent_0_return_mean", "agent_1_return_mean", "success_mean", "test_return_mean",
                "test_agent_1_return_mean", "test_success_mean", "pg_loss", "critic_loss",
                # epymarl's names with per-agent rewards (its plotting scripts read them)
                "total_return_mean", "total_return_std", "test_total_return_mean", "agent_0_return_std"):
        assert key in info, key
    assert info["total_return_mean"] == info["return_mean"]
    assert "shaped_return_mean" not in info
    # the team return is the sum of the agents' returns (reward_scalarisation: sum)
    for prefix in ("", "test_"):
        for team, a0, a1 in zip(info[f"{prefix}return_mean"], info[f"{prefix}agent_0_return_mean"],
                                info[f"{prefix}agent_1_return_mean"], strict=True):
            assert team == pytest.approx(a0 + a1)


def test_ppo_standardises_each_agents_reward(opposed):
    ctx = make_ctx("ippo", "matrix_game", env=NAME, env_args={"episode_limit": 4}, common_reward=False,
                   runner="parallel", batch_size_run=3, n_workers=1, batch_size=3, hidden_dim=8,
                   standardise_rewards=True)
    batch = ctx.runner.run()
    ctx.runner.close_env()
    ctx.learner.train(batch[:, :batch.max_t_filled()], 12, 0)
    stats = ctx.learner.reward_stats
    rewards = batch["reward"][:, :4].reshape(-1, 2)
    assert stats.mean.shape == (2,)
    assert np.allclose(stats.mean.numpy(), rewards.mean(0).numpy(), atol=1e-3)
    assert np.allclose(stats.var.numpy(), rewards.var(0, unbiased=False).numpy(), atol=1e-3)


def test_q_learners_refuse_per_agent_rewards():
    message = ("qmix (learner: q_learner) trains on one team reward: common_reward=False gives per-agent rewards, "
               "which need an actor-critic learner such as ippo/mappo")
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_ctx("qmix", "matrix_game", common_reward=False)


def test_offline_learners_and_dataset_runs_refuse_per_agent_rewards(tmp_path, capsys):
    with pytest.raises(ConfigError, match="learner: bc_learner\\) trains on one team reward: common_reward=False"):
        make_ctx("bc", "matrix_game", common_reward=False)
    with pytest.raises(ConfigError, match="run: collect writes offline datasets, which store one team reward"):
        make_ctx("ippo", "matrix_game", common_reward=False, run="collect")
    # from the command line: refused before the Sacred run starts (nothing written)
    run_main(tmp_path, "vdn", "matrix_game", "common_reward=False", expect=2)
    assert "vdn (learner: q_learner) trains on one team reward" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(tmp_path, "sacred"))


@pytest.mark.parametrize("alg", ["ippo", "mappo"])
def test_ppo_learns_what_only_the_per_agent_rewards_ask(tmp_path, opposed, alg):
    """The opposed game's team reward is 0 whatever the agents do; its per-agent rewards ask agent 0 for action 0
    and agent 1 for action 1. Uniform play takes each preferred action half the time; after 1500 steps the sampled
    policies take them >= 90% of the time (measured: 0.97-1.0 at 800 steps, 1.0 at 2000, seeds 1-3)."""
    for seed in (1, 2, 3):
        run_main(tmp_path / str(seed), alg, "matrix_game", f"env={NAME}", "env_args.episode_limit=5",
                 "common_reward=False", "t_max=1500", "test_interval=1500", "test_nepisode=20", "test_greedy=False",
                 "lr=0.003", "hidden_dim=16", "save_model=False", "use_tensorboard=False", "log_interval=100000",
                 "runner_log_interval=100000", "learner_log_interval=100000", f"seed={seed}")
        # the run folder is named after the matrix_game config's `game` (env_label)
        info = json.load(open(os.path.join(sacred_dir(tmp_path / str(seed), alg, "penalty"), "info.json")))
        assert info["test_preferred_0_mean_T"][-1] >= 1500
        assert min(info["test_preferred_0_mean"][-1], info["test_preferred_1_mean"][-1]) >= 0.9, (seed, info)


def test_mappos_critic_tells_the_agents_apart(opposed, monkeypatch):
    """With per-agent rewards of opposite sign in the same states (agent 0 always +1, agent 1 always -1), the
    centralised critic V_i(s, agent id) fits a value per agent."""
    ctx = make_ctx("mappo", "matrix_game", env=NAME, env_args={"episode_limit": 4}, common_reward=False,
                   runner="parallel", batch_size_run=2, n_workers=1, batch_size=2, hidden_dim=16, lr=0.003, gamma=0.5,
                   seed=0)
    monkeypatch.setattr(ctx.runner.mac, "select_actions",
                        lambda batch, t_ep, t_env, bs=slice(None), **kw: th.zeros(len(bs), 2, dtype=th.long))
    batch = ctx.runner.run()
    ctx.runner.close_env()
    assert th.equal(batch["reward"][:, :4], th.tensor([1.0, -1.0]).expand(2, 4, 2))
    for step in range(60):
        ctx.learner.train(batch, step, 0)
    with th.no_grad():
        values = ctx.learner.critic(batch)[:, 0, :, 0]  # [B, n] at the first step: +-(1 + 0.5 + 0.25 + 0.125)
    assert (values[:, 0] > 1.2).all() and (values[:, 1] < -1.2).all(), values
