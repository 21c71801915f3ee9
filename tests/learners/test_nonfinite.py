"""on_nonfinite: a NaN/inf loss or gradient norm stops every learner family before its optimiser step, with a
message naming the learner, the stat and the step; skip_batch skips that update, warns and counts it."""
import logging

import pytest
import torch as th

from components.episode_buffer import ReplayBuffer, episode_scheme
from helpers import make_ctx
from learners.common import NonFiniteError, NonFiniteGuard

# alg, env config, overrides, the stat a NaN actor parameter makes non-finite, the step's name
FAMILIES = {
    "q": ("qmix", "matrix_game", {}, "loss", "t_env"),
    "ppo": ("mappo", "matrix_game", {"runner": "episode", "batch_size_run": 1}, "pg_loss", "t_env"),
    "bc": ("bc", "climbing", {}, "bc_loss", "gradient step"),
    "omar": ("omar", "climbing", {"critic_hidden_dim": 16}, "actor_loss", "gradient step"),
    "omiga": ("omiga", "climbing", {"critic_hidden_dim": 16, "mixing_embed_dim": 8}, "actor_loss",
              "gradient step"),
}
CLASSES = {"q": "QLearner", "ppo": "PPOLearner", "bc": "BCLearner", "omar": "OMARLearner", "omiga": "OMIGALearner"}


def family_ctx(family, **overrides):
    alg, env, extra, _, _ = FAMILIES[family]
    th.manual_seed(0)
    return make_ctx(alg, env, hidden_dim=8, seed=0, learner_log_interval=1, buffer_size=8, use_cuda=False,
                    env_args={"episode_limit": 4}, **{**extra, **overrides})


def episodes(ctx, n=2):
    """A batch of real episodes from the run's own runner (offline learners read the same layout)."""
    scheme, groups, preprocess = episode_scheme(ctx.runner.get_env_info())
    buffer = ReplayBuffer(scheme, groups, n, ctx.args.episode_limit + 1, preprocess=preprocess)
    for _ in range(n):
        buffer.insert_episode_batch(ctx.runner.run(test_mode=False))
    batch = buffer.latest(n)
    return batch[:, : batch.max_t_filled()]


def train(ctx, batch, step):
    """Offline learners take {name: batch}; here every kind of batch is the same one."""
    if ctx.learner.offline:
        return ctx.learner.train({name: batch for name in ctx.learner.batches}, step, step)
    return ctx.learner.train(batch, step, step)


def learner_params(learner):
    modules = [learner.mac.agent]
    for name in ("mixer", "critic"):
        if getattr(learner, name, None) is not None:
            modules.append(getattr(learner, name))
    modules += list(getattr(learner, "critics", {}).values())
    return [p for m in modules for p in m.parameters()]


def snapshot(learner):
    return [p.detach().clone() for p in learner_params(learner)]


def unchanged(learner, before):
    return all(th.equal(p, q) or th.allclose(p, q, equal_nan=True) for p, q in zip(learner_params(learner), before))


@pytest.mark.parametrize("family", FAMILIES)
def test_nan_parameter_stops_every_learner_before_its_optimiser_step(family):
    ctx = family_ctx(family)
    batch = episodes(ctx)
    with th.no_grad():
        next(iter(ctx.mac.agent.parameters())).view(-1)[0] = float("nan")
    before = snapshot(ctx.learner)
    with pytest.raises(NonFiniteError) as info:
        train(ctx, batch, 7)
    _, _, _, stat, step_name = FAMILIES[family]
    message = str(info.value)
    assert f"{CLASSES[family]} ({FAMILIES[family][0]})" in message
    assert f"non-finite {stat} = nan" in message and f"at {step_name} 7" in message
    assert info.value.step == 7 and stat in info.value.stats
    assert unchanged(ctx.learner, before)  # nothing stepped


def test_huge_learning_rate_stops_at_the_first_non_finite_update():
    ctx = family_ctx("q")  # lr > 1 is refused by the config check: the step size is set on the optimiser itself
    ctx.learner.optimiser.lr = 1e30
    batch = episodes(ctx)
    train(ctx, batch, 0)  # one step to parameters around 1e30: still finite
    assert all(th.isfinite(p).all() for p in learner_params(ctx.learner))
    before = snapshot(ctx.learner)
    with pytest.raises(NonFiniteError, match=r"QLearner \(qmix\): non-finite loss = (nan|inf).* at t_env 1"):
        train(ctx, batch, 1)
    assert unchanged(ctx.learner, before)


@pytest.mark.parametrize("family", FAMILIES)
def test_skip_batch_skips_warns_counts_and_keeps_training(family, caplog):
    ctx = family_ctx(family, on_nonfinite="skip_batch")
    good = episodes(ctx)
    bad = episodes(ctx)
    bad["obs"][:] = float("nan")  # a corrupted batch
    before = snapshot(ctx.learner)
    with caplog.at_level(logging.WARNING):
        train(ctx, bad, 5)
    assert unchanged(ctx.learner, before)
    assert all(th.isfinite(p).all() for p in learner_params(ctx.learner))
    assert ctx.logger.stats["nonfinite_skips"] == [(5, 1.0)]
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "skipped" in r.getMessage()]
    step_name = FAMILIES[family][4]
    assert len(warning) == 1 and CLASSES[family] in warning[0] and f"at {step_name} 5" in warning[0]
    assert all(p.grad is None for p in learner_params(ctx.learner))  # gradients cleared

    train(ctx, good, 6)  # the next good batch trains as usual
    assert not unchanged(ctx.learner, before)
    assert all(th.isfinite(p).all() for p in learner_params(ctx.learner))
    assert ctx.logger.stats["nonfinite_skips"] == [(5, 1.0)]


def test_guard_checks_its_mode():
    class Args:
        on_nonfinite = "ignore"

    with pytest.raises(ValueError, match="on_nonfinite must be one of stop, skip_batch"):
        NonFiniteGuard(object(), Args(), None)
