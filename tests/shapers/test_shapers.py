"""The shaper hook: both runners pass every finished training batch through `shaper.shape(obs, next_obs, actions,
env_reward, terminal)` once, on all its transitions, and store the [N, n] result as `reward` [B, T, n] (the env's team
reward stays in `team_reward`); test episodes are never shaped; `none` changes nothing; checkpoints record the
shaper's provenance and a resumed run checks it."""
import glob
import json
import os

import pytest
import torch as th

import shapers
from helpers import make_ctx, run_main, sacred_dir
from utils.checkpoint import load_run_state
from utils.config import ConfigError

BONUS = th.tensor([1.0, 2.0])  # what the test shaper adds to each agent's reward per step


class Recorder(shapers.Shaper):
    """A per-agent test shaper: the env reward plus BONUS[i] for agent i; records what every call received."""

    name = "recorder"
    per_agent = True
    version = 1
    calls = []

    def shape(self, obs, next_obs, actions, env_reward, terminal):
        Recorder.calls.append({"obs": obs.clone(), "next_obs": next_obs.clone(), "actions": actions.clone(),
                               "env_reward": env_reward.clone(), "terminal": terminal.clone()})
        return env_reward + BONUS

    def provenance(self):
        return {"shaper": self.name, "version": Recorder.version}


class Zero(Recorder):
    """F = 0 in replace mode: every agent's reward becomes 0."""

    name = "zero"

    def shape(self, obs, next_obs, actions, env_reward, terminal):
        return th.zeros_like(env_reward)


class WrongShape(Recorder):
    name = "wrong"

    def shape(self, obs, next_obs, actions, env_reward, terminal):
        return env_reward[:, :1]


class Numpy(Recorder):
    name = "numpy"

    def shape(self, obs, next_obs, actions, env_reward, terminal):
        return env_reward.numpy()


class Same(Recorder):
    """A per-agent shaper with no bonus: the env's team reward, repeated per agent."""
    name = "same"

    def shape(self, obs, next_obs, actions, env_reward, terminal):
        return env_reward


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    for cls in (Recorder, Zero, WrongShape, Numpy, Same):
        monkeypatch.setitem(shapers.REGISTRY, cls.name, cls)
    monkeypatch.setattr(Recorder, "version", 1)
    Recorder.calls.clear()


def climbing_ctx(runner, **overrides):
    size = {"runner": "parallel", "batch_size_run": 3, "n_workers": 1} if runner == "parallel" else {
        "runner": "episode", "batch_size_run": 1}
    return make_ctx("ippo", "climbing", env_args={"episode_limit": 5}, hidden_dim=8, **size, **overrides)


def test_none_is_the_default_and_changes_nothing():
    ctx = make_ctx("qmix", "climbing", env_args={"episode_limit": 5})
    batch = ctx.runner.run()
    ctx.runner.close_env()
    assert ctx.args.shaper == "none" and ctx.runner.shaper is None
    assert batch["reward"].shape == (1, 6, 1) and "team_reward" not in batch.scheme


@pytest.mark.parametrize("runner", ["episode", "parallel"])
def test_one_call_per_training_batch_on_every_transition(runner):
    ctx = climbing_ctx(runner, shaper="recorder")
    batch = ctx.runner.run()
    assert len(Recorder.calls) == 1
    call = Recorder.calls[0]
    b, n = ctx.runner.batch_size, 2
    assert [call[k].shape for k in ("obs", "next_obs", "actions", "env_reward", "terminal")] == [
        (5 * b, n, 6), (5 * b, n, 6), (5 * b, n), (5 * b, n), (5 * b,)]
    assert call["actions"].dtype == th.long and call["terminal"].dtype == th.bool and not call["terminal"].any()
    # transitions in batch order: next_obs of step t is obs of step t+1; the team payoff repeated for every agent
    assert th.equal(call["next_obs"].reshape(b, 5, n, 6)[:, :-1], call["obs"].reshape(b, 5, n, 6)[:, 1:])
    assert th.equal(call["actions"], batch["actions"][:, :5, :, 0].reshape(-1, n))
    team = batch["team_reward"][:, :5]  # the env's payoff, kept beside the shaped reward
    assert th.equal(call["env_reward"], team.reshape(-1, 1).expand(-1, n))
    assert th.equal(batch["reward"][:, :5], team + BONUS)
    assert th.equal(batch["reward"][:, 5], th.zeros(b, n))  # the final state's row is no transition
    logged = {k: v[-1][1] for k, v in ctx.logger.stats.items()}  # the first batch is logged at once
    # scalarised by reward_scalarisation (sum): each agent's team reward plus its bonus, 5 steps
    assert logged["shaped_return_mean"] == pytest.approx(2 * logged["return_mean"] + 5 * 3.0)
    assert logged["return_mean"] == pytest.approx(team.sum().item() / b)

    test_batch = ctx.runner.run(test_mode=True)
    ctx.runner.close_env()
    assert len(Recorder.calls) == 1  # never in test mode
    assert th.equal(test_batch["reward"], test_batch["team_reward"].expand(-1, -1, n))
    assert "shaped_return" not in ctx.runner.stats.test["extra"] and len(ctx.runner.stats.test["returns"]) == b


def fixed_actions(batch, t_ep, t_env, bs=slice(None), test_mode=False):
    """The same joint action (t % 3, (t + 1) % 3) in every env at step t."""
    return th.tensor([[t_ep % 3, (t_ep + 1) % 3]]).expand(batch["obs"][bs].shape[0], -1)


def test_episode_and_parallel_runners_shape_identically(monkeypatch):
    """Same seeds, same actions: the parallel runner's 3 envs and 3 episode-runner episodes get the same rewards."""
    ctx = climbing_ctx("parallel", shaper="recorder", seed=4)
    monkeypatch.setattr(ctx.runner.mac, "select_actions", fixed_actions)
    parallel = ctx.runner.run()
    ctx.runner.close_env()
    for i in range(3):
        ctx = climbing_ctx("episode", shaper="recorder", seed=4 + i)
        monkeypatch.setattr(ctx.runner.mac, "select_actions", fixed_actions)
        episode = ctx.runner.run()
        ctx.runner.close_env()
        for key in ("reward", "team_reward", "actions"):
            assert th.equal(parallel[key][i:i + 1, :5], episode[key][:, :5]), key
    assert len(Recorder.calls) == 4 and parallel["reward"][:, :5].unique().numel() > 2


def test_a_zero_shaper_replaces_the_reward_and_keeps_the_team_reward():
    ctx = climbing_ctx("episode", shaper="zero")
    batch = ctx.runner.run()
    ctx.runner.close_env()
    assert th.equal(batch["reward"], th.zeros(1, 6, 2)) and batch["team_reward"][:, :5].abs().sum() > 0
    assert ctx.logger.stats["shaped_return_mean"][-1][1] == 0.0
    assert ctx.logger.stats["return_mean"][-1][1] == pytest.approx(batch["team_reward"].sum().item())


@pytest.mark.parametrize("shaper, message", [
    ("wrong", r"shaper 'wrong' returned a tensor of shape \(5, 1\); shape\(\) must return a tensor \[N, n_agents\] = "
              r"\[5, 2\]"),
    ("numpy", r"shaper 'numpy' returned a numpy.ndarray of shape \(5, 2\); shape\(\) must return a torch tensor "
              r"\[N, n_agents\] = \[5, 2\]")])
def test_a_wrong_return_is_named(shaper, message):
    ctx = climbing_ctx("episode", shaper=shaper)
    with pytest.raises(ValueError, match=message):
        ctx.runner.run()
    ctx.runner.close_env()


def test_shaped_return_is_the_scalarised_per_agent_return():
    """With common_reward and reward_scalarisation=sum, a zero-bonus per-agent shaper logs n_agents x the team
    return as shaped_return_mean (the team reward repeated per agent, then summed), as docs/adding-a-shaper.md says."""
    ctx = climbing_ctx("episode", shaper="same")
    ctx.runner.run()
    ctx.runner.close_env()
    team = ctx.logger.stats["return_mean"][-1][1]
    assert team != 0 and ctx.logger.stats["shaped_return_mean"][-1][1] == pytest.approx(2 * team)


def test_the_online_loop_shapes_training_batches_only(tmp_path):
    run_main(tmp_path, "ippo", "climbing", "shaper=recorder", "t_max=60", "env_args.episode_limit=5",
             "batch_size_run=3", "batch_size=3", "buffer_size=3", "test_nepisode=3", "test_interval=15",
             "runner_log_interval=0", "log_interval=15", "save_model=False", "use_tensorboard=False", "hidden_dim=8")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "ippo", "climbing"), "info.json")))
    # training runs at t_env 0, 15, ..., 60 (the loop runs while t_env <= t_max); every test run is unshaped
    assert len(Recorder.calls) == 5 and len(info["test_return_mean"]) == 5
    assert info["shaped_return_mean"] == pytest.approx([2 * r + 15.0 for r in info["return_mean"]])
    assert "test_shaped_return_mean" not in info and "pg_loss" in info


def test_q_learners_refuse_a_per_agent_shaper():
    with pytest.raises(ConfigError, match=r"qmix \(learner: q_learner\) trains on one team reward: shaper=recorder "
                                          r"gives per-agent rewards"):
        make_ctx("qmix", "climbing", shaper="recorder")


def test_an_unknown_shaper_is_refused():
    with pytest.raises(ValueError, match="unknown shaper 'nope'; valid: \\[.*'none'.*\\]"):
        make_ctx("qmix", "climbing", shaper="nope")


def test_checkpoints_record_the_shaper_and_a_resume_checks_it(tmp_path, capsys):
    settings = ["shaper=recorder", "env_args.episode_limit=5", "runner=episode", "batch_size_run=1", "batch_size=2",
                "buffer_size=2", "test_interval=1000", "test_nepisode=1", "use_tensorboard=False", "hidden_dim=8"]
    run_main(tmp_path / "first", "ippo", "climbing", *settings, "t_max=10")
    models = glob.glob(str(tmp_path / "first" / "models" / "*"))[0]
    latest = max((d for d in os.listdir(models) if d.isdigit()), key=int)
    assert load_run_state(os.path.join(models, latest))["shaper"] == {"shaper": "recorder", "version": 1}

    Recorder.version = 2  # e.g. another potential file
    run_main(tmp_path / "changed", "ippo", "climbing", *settings, "t_max=20", f"checkpoint_path={models}", expect=2)
    assert ("the checkpoint was trained with shaper {'shaper': 'recorder', 'version': 1}, this run has "
            "{'shaper': 'recorder', 'version': 2}") in capsys.readouterr().err

    # a checkpoint written before shapers recorded themselves is accepted
    state_file = os.path.join(models, latest, "run_state.th")
    state = load_run_state(os.path.join(models, latest))
    del state["shaper"]
    th.save(state, state_file)
    run_main(tmp_path / "old", "ippo", "climbing", *settings, "t_max=20", f"checkpoint_path={models}")
