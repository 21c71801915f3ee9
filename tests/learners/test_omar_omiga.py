"""OMAR and OMIGA offline learners and OMIGA's lmix mixer: smoke training, masking of unavailable actions and
padding, true terminals vs time-limit ends, checkpoints, and a learning check on the climbing game."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch as th

from components.episode_buffer import EpisodeBatch
from helpers import constant_climbing_episodes, make_ctx, write_random_dataset
from learners.common import transition_mask
from learners.omar_learner import expected_value, masked_argmax, masked_logsumexp
from modules.mixers.lmix import LMixer
from offline import DatasetWriter, OfflineDataset

ALGS = ("omar", "omiga")
VARIANTS = [pytest.param("omar", {}, id="omar"), pytest.param("omiga", {}, id="omiga"),
            pytest.param("omar", {"td_lambda": 0.6, "omar_critic_state": True}, id="omar_lambda_state")]
TINY = dict(hidden_dim=16, critic_hidden_dim=32, learner_log_interval=1)
COUNTDOWN_LIMIT, COUNTDOWN_TERMINAL = 6, 3
COUNTDOWN = {"env": "countdown", "env_args": {"episode_limit": COUNTDOWN_LIMIT}}


@pytest.fixture(scope="module")
def countdown_data(tmp_path_factory):
    """Countdown episodes (agent 1 can never take action 0): 4 end with a true terminal after 3 steps, 4 by the
    time limit after 6 (bootstrap), so batches mix both kinds of end and carry padding."""
    path = str(tmp_path_factory.mktemp("data") / "countdown.h5")
    truncating = make_ctx("qmix", "climbing", epsilon_start=1.0, epsilon_finish=1.0, seed=0, **COUNTDOWN)
    terminating = make_ctx("qmix", "climbing", epsilon_start=1.0, epsilon_finish=1.0, seed=1, env="countdown",
                           env_args={"episode_limit": COUNTDOWN_LIMIT, "terminal_at": COUNTDOWN_TERMINAL})
    info, args = truncating.runner.get_env_info(), truncating.args
    with DatasetWriter(path, info, args.env, args.env_args) as w:
        for _ in range(4):
            w.add(terminating.runner.run(test_mode=False), qualities="random")
            w.add(truncating.runner.run(test_mode=False), qualities="random")
    ds = OfflineDataset.load(path)
    assert ds.attrs["n_terminated"] == 4 and ds.attrs["n_truncated"] == 4
    return ds


@pytest.fixture(scope="module")
def climbing_data(tmp_path_factory):
    path, _ = write_random_dataset(str(tmp_path_factory.mktemp("data") / "climbing.h5"), "climbing", 6,
                                   env_args={"episode_limit": 8})
    return OfflineDataset.load(path)


def learner_ctx(alg, data, seed=0, **overrides):
    th.manual_seed(seed)
    env = COUNTDOWN if data == "countdown" else {"env_args": {"episode_limit": 8}}
    tiny = {**TINY, "mixing_embed_dim": 8} if alg == "omiga" else TINY
    return make_ctx(alg, "climbing", seed=seed, **{**tiny, **env, **overrides})


def cut(batch):
    return batch[:, : batch.max_t_filled()]


def with_padding(batch, extra):
    """The same episodes with `extra` more empty steps at the end."""
    scheme = {k: v for k, v in batch.scheme.items() if k != "filled"}
    longer = EpisodeBatch(scheme, batch.groups, batch.batch_size, batch.max_seq_length + extra)
    for key, value in batch.data.transition_data.items():
        longer.data.transition_data[key][:, : batch.max_seq_length] = value
    return longer


def snapshot(learner):
    nets = {"actor": learner.mac.agent, **learner.critics,
            **{f"target_{k}": v for k, v in learner.target_critics.items()}}
    return {f"{name}.{p}": v.detach().clone() for name, net in nets.items() for p, v in net.state_dict().items()}


def shift_output(net, agent, action, amount):
    """Adds `amount` to one agent's output for one action (a logit or a Q-value) at every step."""
    inner = net.forward_seq

    def forward_seq(inputs, hidden):
        out, h = inner(inputs, hidden)
        delta = th.zeros(out.shape[-2:])
        delta[agent, action] = amount
        return out + delta, h

    net.forward_seq = forward_seq


# ----- lmix -----
def test_lmix_weights_are_nonnegative_and_q_tot_is_the_weighted_sum():
    th.manual_seed(0)
    args = SimpleNamespace(n_agents=3, state_shape=7, mixing_embed_dim=8)
    mixer = LMixer(args)
    with th.no_grad():  # push the raw weights negative: abs() must still give w >= 0
        mixer.hyper_w.bias.fill_(-3.0)
    qs, states = th.randn(4, 5, args.n_agents), th.randn(4, 5, args.state_shape)
    w, b = mixer.weights(states)
    assert w.shape == (4, 5, args.n_agents) and b.shape == (4, 5, 1)
    assert (w >= 0).all() and (w > 0).any()
    assert th.allclose(mixer(qs, states, obs=None, mask=None), (w * qs).sum(-1, keepdim=True) + b)
    # monotone and linear in every agent value
    qs.requires_grad_(True)
    mixer(qs, states).sum().backward()
    assert th.allclose(qs.grad, w.detach())


def test_qmix_learner_trains_with_the_lmix_mixer():
    ctx = make_ctx("qmix", "climbing", mixer="lmix", env_args={"episode_limit": 5})
    batch = ctx.runner.run(test_mode=False)
    before = [p.detach().clone() for p in ctx.learner.mixer.parameters()]
    out = ctx.learner.train(batch, 0, 0)
    assert np.isfinite(out["loss"])
    assert all(not th.equal(a, b) for a, b in zip(before, ctx.learner.mixer.parameters()))


# ----- OMAR helpers -----
def test_omar_masked_helpers_ignore_unavailable_actions():
    q = th.tensor([[1.0, 50.0, 2.0], [3.0, -1.0, 1e9]])
    avail = th.tensor([[1, 0, 1], [1, 1, 0]])
    assert masked_argmax(q, avail).flatten().tolist() == [2, 0]
    want = th.stack([th.logsumexp(th.tensor([1.0, 2.0]), 0), th.logsumexp(th.tensor([3.0, -1.0]), 0)])
    assert th.allclose(masked_logsumexp(q, avail), want)
    pi = th.tensor([[0.5, 0.0, 0.5], [0.25, 0.75, 0.0]])
    assert th.allclose(expected_value(pi, q.masked_fill(avail == 0, float("inf")), avail),
                       th.tensor([1.5, 0.0]))


def test_omar_twin_critics_share_no_parameters():
    learner = learner_ctx("omar", "climbing").learner
    q1, q2 = learner.critics["q1"], learner.critics["q2"]
    assert not {id(p) for p in q1.parameters()} & {id(p) for p in q2.parameters()}
    x = th.randn(2, 3, 2, learner.mac.input_shape)
    assert not th.allclose(q1.forward_seq(x, None)[0], q2.forward_seq(x, None)[0])


# ----- both learners -----
@pytest.mark.parametrize("data", ["climbing", "countdown"])
@pytest.mark.parametrize("alg,overrides", VARIANTS)
def test_smoke_training_changes_every_network(alg, overrides, data, request):
    ds = request.getfixturevalue(f"{data}_data")
    learner = learner_ctx(alg, data, **overrides).learner
    before = snapshot(learner)
    for step in range(5):
        out = learner.train({"data": cut(ds.sample(4, rng=step))}, step, step)
        assert set(out) == set(learner.groups) and all(np.isfinite(v) for v in out.values()), out
    after = snapshot(learner)
    unchanged = [k for k in before if th.equal(before[k], after[k])]
    assert not unchanged, unchanged
    assert all(np.isfinite(v.numpy()).all() for v in after.values())
    assert learner.train_steps == 5 and learner.targets.updates == 5
    valid = learner.validation_loss(cut(ds.sample(4, rng=99)))
    assert set(valid) == {f"valid_{k}" for k in learner.groups} and all(np.isfinite(v) for v in valid.values())
    logged = set(learner.logger.stats)
    assert set(learner.groups) | {f"{k[:-len('_loss')]}_grad_norm" for k in learner.groups} <= logged
    assert ({"mixer_w_mean", "bc_weight_mean"} if alg == "omiga" else {"cql_loss", "td_loss"}) <= logged


@pytest.mark.parametrize("alg", ALGS)
def test_unavailable_actions_get_no_probability_and_never_enter_a_loss(alg, countdown_data):
    learner = learner_ctx(alg, "countdown").learner
    for step in range(10):
        learner.train({"data": cut(countdown_data.sample(4, rng=step))}, step, step)
    batch = countdown_data.episode_batch(np.arange(len(countdown_data)))
    mask = transition_mask(batch)[..., 0] > 0
    probs = learner.mac.unroll(batch)[:, :-1][mask]  # real steps [N, n, A]
    assert (probs[:, 1, 0] == 0).all() and th.allclose(probs.sum(-1), th.ones(()))

    base = {k: v.item() for k, v in learner.losses(batch)[0].items()}
    # logits and Q-values (online and target) of the unavailable action blown up by 1e4: nothing changes
    action_nets = [learner.mac.agent] + [net for nets in (learner.critics, learner.target_critics)
                                         for k, net in nets.items() if k not in ("v", "mixer")]
    for net in action_nets:
        shift_output(net, agent=1, action=0, amount=1e4)
    assert {k: v.item() for k, v in learner.losses(batch)[0].items()} == base
    # control: a shift of an available action (agent 1, action 1) does change them
    for net in action_nets:
        shift_output(net, agent=1, action=1, amount=1e2)
    changed = {k: v.item() for k, v in learner.losses(batch)[0].items()}
    assert any(abs(changed[k] - base[k]) > 1e-3 * (1 + abs(base[k])) for k in base), (changed, base)


@pytest.mark.parametrize("alg", ALGS)
def test_each_loss_reaches_only_its_own_optimiser_group(alg, countdown_data):
    """train() backpropagates the sum of the losses once: that is only right if the groups do not leak."""
    learner = learner_ctx(alg, "countdown").learner
    losses, _ = learner.losses(cut(countdown_data.sample(4, rng=0)))
    for name, loss in losses.items():
        for group, (params, _) in learner.groups.items():
            grads = th.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            reached = any(g is not None and g.abs().sum() > 0 for g in grads)
            assert reached == (group == name), (name, group)


@pytest.mark.parametrize("alg", ALGS)
def test_inconsistent_dataset_action_is_reported(alg, countdown_data):
    learner = learner_ctx(alg, "countdown").learner
    batch = countdown_data.episode_batch([0])
    batch.data.transition_data["actions"][0, 1, 1] = 0  # agent 1 "took" its unavailable action 0
    with pytest.raises(ValueError, match="agent 1 at step 1 .* unavailable"):
        learner.train({"data": batch}, 0, 0)


@pytest.mark.parametrize("alg,overrides", VARIANTS)
def test_padding_does_not_change_losses_or_gradients(alg, overrides, countdown_data):
    learner = learner_ctx(alg, "countdown", **overrides).learner
    batch = cut(countdown_data.episode_batch(np.arange(len(countdown_data))))
    padded = with_padding(batch, 4)
    assert padded.max_seq_length == batch.max_seq_length + 4 == COUNTDOWN_LIMIT + 5

    def losses_and_grads(b):
        losses, _ = learner.losses(b)
        params = [p for params, _ in learner.groups.values() for p in params]
        grads = th.autograd.grad(sum(losses.values()), params, allow_unused=True)
        return {k: v.item() for k, v in losses.items()}, grads

    (l1, g1), (l2, g2) = losses_and_grads(batch), losses_and_grads(padded)
    assert l2 == pytest.approx(l1, rel=1e-5)
    assert all(th.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g1, g2))


@pytest.mark.parametrize("alg", ALGS)
def test_terminals_stop_bootstrapping_and_time_limit_ends_bootstrap(alg, countdown_data):
    learner = learner_ctx(alg, "countdown").learner
    value = 100.0
    for key, net in learner.target_critics.items():  # every target value = 100
        if key != "mixer":
            net.forward_seq = lambda x, h, net=net: (th.full((*x.shape[:3], net.fc3.out_features), value), h)
    batch = countdown_data.episode_batch(np.arange(len(countdown_data)))
    inputs = learner._critic_inputs(batch) if alg == "omar" else learner.mac._build_inputs_seq(batch)
    if alg == "omar":
        y = learner.td_targets(batch, inputs, learner.mac.unroll(batch).detach())[..., 0]  # agent 0
        v_next = th.full_like(y, value)
    else:
        y = learner.td_targets(batch, inputs)[..., 0]
        w, b = learner.target_critics["mixer"].weights(batch["state"][:, 1:])
        v_next = (w * value).sum(-1) + b[..., 0]
    gamma = learner.args.gamma
    terminal = batch["terminated"][:, :-1, 0] > 0
    truncated = batch["truncated"][:, :-1, 0] > 0
    assert terminal.sum() == 4 and truncated.sum() == 4
    assert th.allclose(y[terminal], th.ones(4))  # countdown reward 1, nothing after a true terminal
    assert th.allclose(y[truncated], 1 + gamma * v_next[truncated])
    assert (terminal.float().argmax(1) == COUNTDOWN_TERMINAL - 1)[terminal.any(1)].all()


@pytest.mark.parametrize("alg", ALGS)
def test_checkpoint_round_trip(alg, countdown_data, tmp_path):
    learner = learner_ctx(alg, "countdown", seed=0).learner
    for step in range(3):
        learner.train({"data": cut(countdown_data.sample(4, rng=step))}, step, step)
    learner.save_models(str(tmp_path))
    saved = snapshot(learner)
    other = learner_ctx(alg, "countdown", seed=1).learner
    assert any(not th.equal(a, b) for a, b in zip(snapshot(learner).values(), snapshot(other).values()))
    other.load_models(str(tmp_path))
    assert all(th.equal(a, b) for a, b in zip(snapshot(learner).values(), snapshot(other).values()))
    for name, (_, opt) in learner.groups.items():
        mine, theirs = opt.state_dict(), other.groups[name][1].state_dict()
        assert mine["steps"] == theirs["steps"] == 3
        assert all(th.equal(a, b) for a, b in zip(mine["exp_avg_sq"], theirs["exp_avg_sq"]))
    assert other.targets.state_dict() == learner.targets.state_dict() and other.train_steps == 3
    # the next update is identical too (optimiser moments, targets and counters all restored)
    batch = cut(countdown_data.sample(4, rng=9))
    assert other.train({"data": batch}, 3, 3) == learner.train({"data": batch}, 3, 3)
    assert all(th.equal(a, b) for a, b in zip(snapshot(learner).values(), snapshot(other).values()))
    # evaluate=True loads only the actor
    actor_only = learner_ctx(alg, "countdown", seed=2).learner
    critic_before = snapshot(actor_only)
    actor_only.load_models(str(tmp_path), evaluate=True)
    after = snapshot(actor_only)
    assert all(th.equal(after[k], saved[k] if k.startswith("actor.") else critic_before[k]) for k in after)


@pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("alg", ALGS)
def test_cuda_training_matches_cpu(alg, countdown_data):
    runs = []
    for use_cuda in (False, True):
        learner = learner_ctx(alg, "countdown", use_cuda=use_cuda).learner  # same seed: same initial weights
        runs.append([learner.train({"data": cut(countdown_data.sample(4, rng=step))}, step, step) for step in range(3)])
        assert learner.mac.device.type == ("cuda" if use_cuda else "cpu")
    for cpu, gpu in zip(*runs):
        assert gpu == pytest.approx(cpu, rel=1e-3, abs=1e-5)


# ----- learning -----
def climbing_dataset(path, n_optimum, n_safe, n_random):
    """n_optimum episodes of (0, 0) (11 per step), n_safe of (2, 2) (5 per step), n_random uniformly random."""
    np.random.seed(0)  # the runner's random actions: the same episodes whatever ran before
    ctx = make_ctx("qmix", "climbing", epsilon_start=1.0, epsilon_finish=1.0, seed=0)
    with DatasetWriter(path, ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args) as w:
        w.add_arrays(constant_climbing_episodes(n_optimum, 0, 0), qualities="expert")
        if n_safe:
            w.add_arrays(constant_climbing_episodes(n_safe, 2, 2), qualities="medium")
        for _ in range(n_random):
            w.add(ctx.runner.run(test_mode=False), qualities="random")
    return OfflineDataset.load(path)


def greedy_after_training(alg, ds, steps, **overrides):
    """(joint actions [25, n], return) of a greedy episode after `steps` updates on batches of 32 episodes.
    Targets are faster than the configs' (OMIGA tau 0.005) so that values of 25-step episodes form quickly."""
    th.manual_seed(0)
    ctx = make_ctx(alg, "climbing", seed=0, hidden_dim=32, critic_hidden_dim=64, target_update_interval_or_tau=0.05,
                   critic_lr=0.002, learner_log_interval=10**9, **overrides)
    rng = np.random.default_rng(0)
    for step in range(steps):
        ctx.learner.train({"data": cut(ds.sample(32, rng=rng))}, step, step)
    batch = ctx.runner.run(test_mode=True)
    return batch["actions"][0, :25, :, 0], batch["reward"].sum().item()


@pytest.fixture(scope="module")
def optimum_and_random(tmp_path_factory):
    return climbing_dataset(str(tmp_path_factory.mktemp("data") / "optimum_random.h5"), 16, 0, 16)


@pytest.fixture(scope="module")
def optimum_minority(tmp_path_factory):
    """1/3 of the episodes play the optimum (0, 0), 2/3 the safe (2, 2): imitation alone would play (2, 2)."""
    return climbing_dataset(str(tmp_path_factory.mktemp("data") / "optimum_minority.h5"), 10, 20, 0)


@pytest.mark.parametrize("alg", ALGS)
def test_greedy_policy_plays_the_optimum_from_optimum_and_random_episodes(alg, optimum_and_random):
    # learner seeds 0-4 (with datasets from seeds 0-4) all play (0, 0) from step 150 on
    actions, ret = greedy_after_training(alg, optimum_and_random, 300)
    assert (actions == 0).all() and ret == 25 * 11


@pytest.mark.parametrize("alg,overrides,joint", [
    pytest.param("omar", {}, 0, id="omar"), pytest.param("omiga", {}, 0, id="omiga"),
    pytest.param("omiga", {"omiga_alpha": 1e6}, 2, id="omiga_alpha_inf_is_bc")])
def test_greedy_policy_finds_the_optimum_held_by_a_data_minority(alg, overrides, joint, optimum_minority):
    """Both learners play the optimum (0, 0) every step; learner seeds 0-4 all do from step 200 (OMAR) and 400
    (OMIGA) on. Control: OMIGA with alpha -> inf (BC weights all 1, plain imitation) plays the majority (2, 2)."""
    first = optimum_minority.arrays()["actions"][:, 0, :, 0]
    assert all(np.bincount(first[:, i], minlength=3).argmax() == 2 for i in range(2))
    actions, ret = greedy_after_training(alg, optimum_minority, 600, **overrides)
    assert (actions == joint).all() and ret == 25 * (11 if joint == 0 else 5)
