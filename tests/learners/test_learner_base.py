"""learners.base: one `to`/`cuda` from each learner's declared state_parts; every network moves (checked on torch's
meta device, which needs no GPU), and learners outside the base are refused by the run setup."""
import pytest

from helpers import make_ctx, write_random_dataset
from learners.base import Learner


def parameters(learner):
    nets = [p for p in learner.all_parts() if callable(getattr(p, "parameters", None))]  # modules and MACs
    return [t for net in nets for t in net.parameters()]


@pytest.mark.parametrize("alg,overrides", [("qmix", {}), ("qllm", {"igm_gate": False}), ("mappo", {}),
                                           ("ippo", {})])
def test_online_learners_move_every_network(alg, overrides):
    ctx = make_ctx(alg, "climbing", env_args={"episode_limit": 5}, use_cuda=False, **overrides)
    try:
        learner = ctx.learner
        assert isinstance(learner, Learner) and parameters(learner)
        learner.to("meta")
        assert all(p.device.type == "meta" for p in parameters(learner))
        assert all(p.device.type == "meta" for p in learner.mac.parameters())
    finally:
        ctx.runner.close_env()
        for provider in ctx.features:
            provider.close()


@pytest.mark.parametrize("alg", ["bc", "omar", "omiga"])
def test_offline_learners_move_every_network(alg, tmp_path):
    path, _ = write_random_dataset(tmp_path / "d.h5")
    ctx = make_ctx(alg, "climbing", offline_dataset=str(path), use_cuda=False)
    try:
        learner = ctx.learner
        assert learner.offline and parameters(learner)
        learner.to("meta")
        assert all(p.device.type == "meta" for p in parameters(learner))
    finally:
        ctx.runner.close_env()


def test_a_learner_without_the_base_is_refused(monkeypatch):
    import learners

    class Bare:
        def __init__(self, mac, scheme, logger, args):
            pass

    monkeypatch.setitem(learners.REGISTRY, "bare", Bare)
    with pytest.raises(TypeError, match="must subclass learners.base.Learner"):
        make_ctx("qmix", "climbing", learner="bare")


@pytest.mark.parametrize("alg,buffer", [("qmix", True), ("mappo", True), ("bc", False), ("omar", False)])
def test_a_replay_buffer_only_for_learners_that_use_one(alg, buffer):
    ctx = make_ctx(alg, "climbing", env_args={"episode_limit": 5}, runner="episode", batch_size_run=1)
    try:
        assert type(ctx.learner).uses_replay_buffer is buffer is (ctx.buffer is not None)
    finally:
        ctx.runner.close_env()


def test_evaluation_allocates_no_replay_buffer():
    ctx = make_ctx("qmix", "climbing", env_args={"episode_limit": 5}, evaluate=True)
    assert ctx.buffer is None and ctx.learner.uses_replay_buffer


def test_every_offline_learner_declares_whether_it_reads_rewards():
    """run: offline warns about an offline_reward a learner never reads from the declaration, never by probing: every
    offline learner of the registry says True or False (OfflineLearner leaves it undeclared)."""
    import learners

    declared = {name: cls.reads_rewards for name, cls in learners.REGISTRY.items() if cls.offline}
    assert all(isinstance(v, bool) for v in declared.values()), declared
    assert {n for n, v in declared.items() if v} == {"omar_learner", "omiga_learner"}


def test_an_offline_learner_that_does_not_declare_reads_rewards_is_refused(monkeypatch, tmp_path):
    import learners
    from learners.bc_learner import BCLearner
    from run.offline import leave_out_unread

    class Undeclared(BCLearner):
        reads_rewards = None

    monkeypatch.setitem(learners.REGISTRY, "undeclared", Undeclared)
    path, _ = write_random_dataset(tmp_path / "d.h5")
    ctx = make_ctx("bc", "climbing", offline_dataset=str(path), learner="undeclared")
    try:
        with pytest.raises(TypeError, match="must declare reads_rewards"):
            leave_out_unread(ctx.args, ctx.learner, None)
    finally:
        ctx.runner.close_env()
