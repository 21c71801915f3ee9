"""bc_learner: the loss on masked actions, padding, inconsistent data, BC(β) weighting, checkpoints."""
import pytest
import torch as th
import torch.nn.functional as F

from helpers import make_ctx, write_random_dataset
from learners.bc_learner import BCLearner
from offline import OfflineDataset


@pytest.fixture()
def countdown(tmp_path):
    """Countdown episodes (agent 1 can never take action 0) with a real terminal at step 4 of 6."""
    env = {"env": "countdown", "env_args": {"episode_limit": 6, "terminal_at": 4}}
    path, _ = write_random_dataset(str(tmp_path / "countdown.h5"), "climbing", 6, **env)
    ctx = make_ctx("bc", "climbing", batch_size=3, **env)
    return OfflineDataset.load(path), ctx


def manual_nll(ctx, batch):
    """Cross-entropy of the raw agent outputs with unavailable actions removed, over real transitions."""
    mac = ctx.mac
    out, _ = mac.agent.forward_seq(mac._build_inputs_seq(batch), mac.agent.init_hidden(batch.batch_size, 2))
    out = out[:, :-1].masked_fill(batch["avail_actions"][:, :-1] == 0, float("-inf"))
    logp = F.log_softmax(out, -1).gather(3, batch["actions"][:, :-1]).squeeze(3)
    mask = batch["filled"][:, 1:].float().expand_as(logp)
    return -logp.where(mask > 0, 0.0).sum() / mask.sum()  # padded steps have no available action at all


def test_loss_is_the_cross_entropy_over_available_actions_and_real_steps(countdown):
    ds, ctx = countdown
    batch = ds.episode_batch([0, 1, 2])
    loss, _ = ctx.learner.nll(batch)
    assert loss.item() == pytest.approx(manual_nll(ctx, batch).item(), rel=1e-5)
    # padding after the terminal (T+1 = 7 stored steps, 5 filled) changes nothing
    cut = batch[:, : batch.max_t_filled()]
    assert cut.max_seq_length == 5 < batch.max_seq_length
    assert ctx.learner.nll(cut)[0].item() == pytest.approx(loss.item(), rel=1e-6)


def test_unavailable_action_gets_no_probability_after_training(countdown):
    ds, ctx = countdown
    for step in range(20):
        ctx.learner.train({"data": ds.sample(3, rng=step)}, step, step)
    batch = ds.episode_batch([0])
    probs = ctx.mac.unroll(batch)[:, :5]  # the 5 filled steps (padding has no available action)
    assert (probs[:, :, 1, 0] == 0).all()  # agent 1, action 0
    assert th.allclose(probs.sum(-1), th.ones(()))


def test_inconsistent_dataset_action_is_reported(countdown):
    ds, ctx = countdown
    batch = ds.episode_batch([0])
    batch.data.transition_data["actions"][0, 1, 1] = 0  # agent 1 "took" its unavailable action 0
    with pytest.raises(ValueError, match="agent 1 at step 1 .* unavailable"):
        ctx.learner.nll(batch)


def test_bc_beta_weights_expert_and_union_losses(countdown):
    ds, ctx = countdown
    union, expert = ds.episode_batch([0, 1, 2]), ds.episode_batch([3, 4, 5])
    ctx.args.bc_beta = 0.25
    learner = BCLearner(ctx.mac, None, ctx.logger, ctx.args)
    assert learner.needs("expert") and learner.offline
    want = 0.25 * learner.nll(expert)[0].item() + 0.75 * learner.nll(union)[0].item()
    assert learner.train({"data": union, "expert": expert}, 0, 0)["loss"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="needs expert data"):
        learner.train({"data": union}, 1, 0)


def test_bc_needs_a_policy_actor():
    ctx = make_ctx("qmix", "climbing")
    with pytest.raises(ValueError, match="pi_logits"):
        BCLearner(ctx.mac, None, ctx.logger, ctx.args)


def test_checkpoint_round_trip(countdown, tmp_path):
    ds, ctx = countdown
    for step in range(3):
        ctx.learner.train({"data": ds.sample(3, rng=step)}, step, step)
    ctx.learner.save_models(str(tmp_path))
    other = make_ctx("bc", "climbing", batch_size=3, env="countdown", env_args={"episode_limit": 6})
    other.learner.load_models(str(tmp_path))
    batch = ds.episode_batch([0, 1])
    assert th.equal(ctx.mac.unroll(batch), other.mac.unroll(batch))
    a, b = ctx.learner.optimiser.state_dict(), other.learner.optimiser.state_dict()
    assert str(a) == str(b)
