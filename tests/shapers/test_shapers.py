"""The shaper hook: the run loop passes every training episode batch through `shaper` before the buffer, so what a
shaper returns is what the learner trains on; `none` changes nothing."""
import json
import os

import pytest
import torch

import shapers
from helpers import make_ctx, run_main, sacred_dir


class DoubleReward:
    """A test shaper: doubles the team reward and records a per-agent copy in a field it declares."""

    scheme = {"agent_reward": {"vshape": (2,)}}
    calls = []

    def __init__(self, args):
        self.args = args

    def __call__(self, batch, t_env=None):
        DoubleReward.calls.append(t_env)
        reward = batch["reward"].clone()  # a view of the batch otherwise
        batch.update({"reward": reward * 2, "agent_reward": reward.expand(-1, -1, 2)}, mark_filled=False)
        return batch


@pytest.fixture
def double(monkeypatch):
    monkeypatch.setitem(shapers.REGISTRY, "double", DoubleReward)
    DoubleReward.calls.clear()
    return DoubleReward


def test_none_is_the_default_and_changes_nothing():
    ctx = make_ctx("qmix", "climbing", env_args={"episode_limit": 5})
    batch = ctx.runner.run()
    reward = batch["reward"].clone()
    assert ctx.args.shaper == "none" and torch.equal(ctx.annotate(batch)["reward"], reward)
    ctx.runner.close_env()


def test_a_registered_shaper_changes_what_the_learner_trains_on(double):
    ctx = make_ctx("qmix", "climbing", shaper="double", env_args={"episode_limit": 5}, batch_size=1, buffer_size=2)
    batch = ctx.runner.run()
    raw = batch["reward"].clone()
    ctx.buffer.insert_episode_batch(ctx.annotate(batch, t_env=5))
    stored = ctx.buffer.sample(1)
    assert torch.equal(stored["reward"], 2 * raw) and torch.equal(stored["agent_reward"][..., 1:], raw)
    assert double.calls == [5]
    ctx.runner.close_env()


def test_the_online_loop_applies_it_to_every_training_batch(tmp_path, double):
    run_main(tmp_path, "qmix", "climbing", "shaper=double", "t_max=30", "env_args.episode_limit=5",
             "test_nepisode=2", "test_interval=1000", "save_model=False", "use_tensorboard=False", "batch_size=2",
             "buffer_size=4")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "qmix", "climbing"), "info.json")))
    assert double.calls == [5 * (i + 1) for i in range(len(double.calls))] and len(double.calls) >= 6
    assert "test_return_mean" in info  # test episodes are not shaped (and not stored)


def test_an_unknown_shaper_is_refused():
    with pytest.raises(ValueError, match="unknown shaper 'nope'; valid: \\['lca', 'none'\\]"):
        make_ctx("qmix", "climbing", shaper="nope")
