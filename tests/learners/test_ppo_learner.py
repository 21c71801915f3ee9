import itertools
import math

import pytest
import torch as th

from components.episode_buffer import EpisodeBatch
from components.transforms import OneHot
from controllers import REGISTRY as mac_REGISTRY
from helpers import config_args
from learners.common import transition_mask
from learners.ppo_learner import LOG_KEYS, PPOLearner
from modules.critics import REGISTRY as critic_REGISTRY
from utils.rl_utils import build_gae_targets

N_AGENTS, N_ACTIONS, OBS_DIM, STATE_DIM = 2, 3, 5, 7


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # tiny networks: OpenMP threads only add overhead, and spin badly when the CPU is shared
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


class RecordingLogger:
    def __init__(self):
        self.stats = {}

    def log_stat(self, key, value, t):
        self.stats.setdefault(key, []).append(value)


def make_args(**kw):
    """ippo's merged config with the test's small settings."""
    settings = dict(n_agents=N_AGENTS, n_actions=N_ACTIONS, state_shape=STATE_DIM, obs_shape=OBS_DIM, lr=5e-3,
                    grad_norm_clip=10, hidden_dim=16, learner_log_interval=0, epochs=2)
    return config_args("ippo", "matrix_game", **{**settings, **kw})


def scheme_and_groups(state_dim=STATE_DIM, obs_dim=OBS_DIM, n_actions=N_ACTIONS):
    scheme = {
        "state": {"vshape": state_dim},
        "obs": {"vshape": obs_dim, "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": th.long},
        "avail_actions": {"vshape": (n_actions,), "group": "agents", "dtype": th.int},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": th.uint8},
    }
    return scheme, {"agents": N_AGENTS}, {"actions": ("actions_onehot", [OneHot(out_dim=n_actions)])}


def make_batch(episodes=((5, False), (3, True), (2, False), (5, True)), seed=0):
    """Random episodes laid out like the runners' output: (length, terminated) each; the final state at step
    `length` is filled, later steps are zero padding. Some actions are unavailable."""
    g = th.Generator().manual_seed(seed)
    t_max = max(length for length, _ in episodes) + 1
    scheme, groups, preprocess = scheme_and_groups()
    batch = EpisodeBatch(scheme, groups, len(episodes), t_max, preprocess=preprocess)
    for b, (length, terminal) in enumerate(episodes):
        steps = slice(0, length + 1)
        avail = (th.rand(length + 1, N_AGENTS, N_ACTIONS, generator=g) < 0.6).int()
        avail[..., 0] = 1  # at least one action available
        actions = th.multinomial(avail.float().reshape(-1, N_ACTIONS), 1, generator=g).reshape(length + 1, N_AGENTS, 1)
        batch.update({
            "state": th.randn(length + 1, STATE_DIM, generator=g),
            "obs": th.randn(length + 1, N_AGENTS, OBS_DIM, generator=g),
            "avail_actions": avail,
            "actions": actions,
        }, bs=b, ts=steps)
        reward = th.randn(length, 1, generator=g)
        term = th.zeros(length, 1, dtype=th.uint8)
        term[-1] = int(terminal)
        batch.update({"reward": reward, "terminated": term}, bs=b, ts=slice(0, length), mark_filled=False)
    return batch


def make_learner(seed=0, **kw):
    th.manual_seed(seed)
    args = make_args(**kw)
    scheme, groups, preprocess = scheme_and_groups()
    full_scheme = EpisodeBatch(scheme, groups, 1, 1, preprocess=preprocess).scheme
    mac = mac_REGISTRY[args.mac](full_scheme, groups, args)
    return PPOLearner(mac, full_scheme, RecordingLogger(), args)


def snapshot(learner):
    return [p.detach().clone() for p in itertools.chain(learner.mac.parameters(), learner.critic.parameters())]


# ----- (a) GAE in rl_utils against a per-episode reference -----
def reference_gae(rewards, values, terminal, gamma, lam):
    """One episode: rewards [L], values [L+1] (the last is the final state)."""
    length = len(rewards)
    adv = [0.0] * length
    next_adv = 0.0
    for t in reversed(range(length)):
        bootstrap = 0.0 if (terminal and t == length - 1) else gamma * values[t + 1]
        next_adv = rewards[t] + bootstrap - values[t] + gamma * lam * next_adv
        adv[t] = next_adv
    return adv, [a + v for a, v in zip(adv, values[:-1], strict=True)]


def standard_mask(batch):
    mask = batch["filled"][:, :-1].float()
    mask[:, 1:] = mask[:, 1:] * (1 - batch["terminated"][:, :-2].float())
    return mask


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_matches_per_episode_reference(lam):
    # a terminated short episode, a time-limit (longest) episode, a terminated full-length one; padding after
    episodes = ((3, True), (5, False), (5, True), (1, True))
    batch = make_batch(episodes, seed=1)
    gamma, k = 0.9, 2
    t_max = batch.max_seq_length
    g = th.Generator().manual_seed(2)
    values = th.randn(len(episodes), t_max, k, generator=g)  # padding values are garbage that must not leak in
    rewards = batch["reward"][:, :-1].expand(-1, -1, k).clone()
    rewards[rewards == 0] = 123.0  # garbage rewards on padding steps
    terminated = batch["terminated"][:, :-1].float().expand(-1, -1, k)
    mask = standard_mask(batch).expand(-1, -1, k)
    assert th.equal(mask, transition_mask(batch).expand(-1, -1, k))  # same when no early truncation

    adv, ret = build_gae_targets(rewards, terminated, mask, values, gamma, lam)
    for b, (length, terminal) in enumerate(episodes):
        for j in range(k):
            ref_adv, ref_ret = reference_gae(rewards[b, :length, j].tolist(), values[b, :length + 1, j].tolist(),
                                             terminal, gamma, lam)
            assert th.allclose(adv[b, :length, j], th.tensor(ref_adv), atol=1e-5)
            assert th.allclose(ret[b, :length, j], th.tensor(ref_ret), atol=1e-5)
        assert (adv[b, length:] == 0).all()


def test_transition_mask_drops_final_step_of_early_truncation():
    # episode 1 is cut by a time limit before the longest episode ends: step 2 holds only its final state
    batch = make_batch(((5, False), (2, False)), seed=3)
    assert standard_mask(batch)[1, :, 0].tolist() == [1, 1, 1, 0, 0]  # the usual mask keeps step 2
    assert transition_mask(batch)[1, :, 0].tolist() == [1, 1, 0, 0, 0]
    values = th.randn(2, batch.max_seq_length, 1)
    rewards = batch["reward"][:, :-1]
    adv, _ = build_gae_targets(rewards, batch["terminated"][:, :-1].float(), transition_mask(batch), values, 0.9, 0.95)
    ref_adv, _ = reference_gae(rewards[1, :2, 0].tolist(), values[1, :3, 0].tolist(), False, 0.9, 0.95)
    assert th.allclose(adv[1, :2, 0], th.tensor(ref_adv), atol=1e-5)


# ----- critics -----
@pytest.mark.parametrize("name", sorted(critic_REGISTRY))
@pytest.mark.parametrize("individual_obs", [False, True])
def test_critic_shapes(name, individual_obs):
    args = make_args(obs_individual_obs=individual_obs)
    scheme, _, _ = scheme_and_groups()
    critic = critic_REGISTRY[name](scheme, args)
    batch = make_batch()
    v = critic(batch)
    assert v.shape == (batch.batch_size, batch.max_seq_length, N_AGENTS, 1)
    v.sum().backward()
    assert all(p.grad is not None for p in critic.parameters())


def test_ns_critic_agents_are_independent():
    scheme, _, _ = scheme_and_groups()
    critic = critic_REGISTRY["ac_critic_ns"](scheme, make_args())
    batch = make_batch()
    v = critic(batch)
    v[..., 0, :].sum().backward()
    assert all(p.grad[1].abs().sum() == 0 and p.grad[0].abs().sum() > 0 for p in critic.parameters())


# ----- (b) learner smoke test -----
CRITICS = [("ac_critic", "basic_mac"), ("cv_critic", "basic_mac"), ("ac_critic_ns", "non_shared_mac"),
           ("cv_critic_ns", "non_shared_mac")]


@pytest.mark.parametrize("critic_type,mac", CRITICS)
@pytest.mark.parametrize("num_mini_batches", [1, 2])
@pytest.mark.parametrize("use_value_norm,value_clip", itertools.product([False, True], [False, True]))
def test_train_smoke(critic_type, mac, num_mini_batches, use_value_norm, value_clip):
    learner = make_learner(critic_type=critic_type, mac=mac, num_mini_batches=num_mini_batches,
                           use_value_norm=use_value_norm, value_clip=value_clip, obs_individual_obs=True,
                           standardise_rewards=use_value_norm, use_gae=not value_clip)
    before = snapshot(learner)
    batch = make_batch()
    for t_env in (0, 100):
        out = learner.train(batch, t_env=t_env, episode_num=0)
        assert all(math.isfinite(v) for v in out.values())
    after = snapshot(learner)
    assert all(not th.equal(a, b) for a, b in zip(before, after, strict=True)), "every parameter should move"
    assert all(th.isfinite(p).all() for p in after)
    logged = learner.logger.stats
    for key in (*LOG_KEYS, "advantage_mean", "value_mean"):
        assert key in logged and all(math.isfinite(v) for v in logged[key]), key
    if use_value_norm:
        assert learner.value_norm.count > 1


def test_single_epoch_is_unclipped_a2c():
    learner = make_learner(epochs=1, num_mini_batches=1)
    learner.train(make_batch(), t_env=0, episode_num=0)
    assert learner.logger.stats["clip_fraction"] == [0.0]
    assert learner.logger.stats["approx_kl"] == [0.0]


def test_entropy_respects_unavailable_actions():
    learner = make_learner()
    with th.no_grad():  # uniform policy: entropy is log(number of available actions)
        learner.mac.agent.fc2.weight.zero_()
        learner.mac.agent.fc2.bias.zero_()
    batch = make_batch()
    actions = batch["actions"][:, :-1]
    log_pi, entropy, pi_max = learner._log_probs(batch, actions)
    n_avail = batch["avail_actions"][:, :-1].sum(-1).float()
    real = n_avail > 0
    assert th.allclose(entropy[real], n_avail[real].log(), atol=1e-5)
    assert th.allclose(log_pi[real], -n_avail[real].log(), atol=1e-5)
    assert th.isfinite(entropy).all() and th.isfinite(pi_max).all()


# ----- (c) checkpoint round trip -----
def assert_same(a, b):
    if isinstance(a, th.Tensor):
        assert th.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def learner_state(learner):
    return {"agent": learner.mac.state_dict(), "critic": learner.critic.state_dict(),
            "agent_opt": learner.agent_optimiser.state_dict(), "critic_opt": learner.critic_optimiser.state_dict(),
            "value_norm": learner.value_norm.state_dict(), "reward_stats": learner.reward_stats.state_dict(),
            "counters": (learner.train_steps, learner.log_stats_t)}


def test_save_load_round_trip(tmp_path):
    opts = dict(critic_type="cv_critic", use_value_norm=True, standardise_rewards=True, learner_log_interval=50)
    learner = make_learner(seed=0, **opts)
    batch = make_batch()
    learner.train(batch, t_env=10, episode_num=0)
    learner.train(batch, t_env=20, episode_num=0)
    learner.save_models(str(tmp_path))

    restored = make_learner(seed=1, **opts)
    restored.load_models(str(tmp_path))
    assert_same(learner_state(learner), learner_state(restored))

    # resuming continues exactly as the original would have
    th.manual_seed(5)
    learner.train(batch, t_env=30, episode_num=0)
    th.manual_seed(5)
    restored.train(batch, t_env=30, episode_num=0)
    assert_same(learner_state(learner), learner_state(restored))

    evaluator = make_learner(seed=2, **opts)
    critic_before = {k: v.clone() for k, v in evaluator.critic.state_dict().items()}
    evaluator.load_models(str(tmp_path), evaluate=True)
    assert_same(evaluator.mac.state_dict(), th.load(tmp_path / "agent.th"))
    assert_same(evaluator.critic.state_dict(), critic_before)
    assert evaluator.train_steps == 0


# ----- (d) learning check: a one-step contextual bandit -----
def bandit_batch(mac, n_episodes, n_contexts, g):
    """One-step episodes: the context (in state and obs) names the rewarded action; actions come from the
    current policy through the acting path."""
    scheme, groups, preprocess = scheme_and_groups(state_dim=n_contexts + 1, obs_dim=n_contexts)
    batch = EpisodeBatch(scheme, groups, n_episodes, 2, preprocess=preprocess)
    context = th.randint(0, n_contexts, (n_episodes,), generator=g)
    obs = th.nn.functional.one_hot(context, n_contexts).float()
    state = th.cat([obs, th.ones(n_episodes, 1)], dim=1)  # differs from obs, so the two critics differ
    inputs = {"state": state.unsqueeze(1).expand(-1, 2, -1),
              "obs": obs.reshape(-1, 1, 1, n_contexts).expand(-1, 2, N_AGENTS, -1),
              "avail_actions": th.ones(n_episodes, 2, N_AGENTS, N_ACTIONS, dtype=th.int)}
    batch.update(inputs)
    mac.init_hidden(n_episodes)
    with th.no_grad():
        actions = mac.select_actions(batch, t_ep=0, t_env=0)
    reward = (actions == context.unsqueeze(1)).float().mean(1, keepdim=True)
    batch.update({"actions": actions.unsqueeze(-1).unsqueeze(1), "reward": reward.unsqueeze(1),
                  "terminated": th.ones(n_episodes, 1, 1, dtype=th.uint8)}, ts=slice(0, 1), mark_filled=False)
    return batch


def p_correct(learner, n_contexts):
    scheme, groups, preprocess = scheme_and_groups(state_dim=n_contexts + 1, obs_dim=n_contexts)
    batch = EpisodeBatch(scheme, groups, n_contexts, 2, preprocess=preprocess)
    eye = th.eye(n_contexts)
    batch.update({"state": th.cat([eye, th.ones(n_contexts, 1)], dim=1).unsqueeze(1).expand(-1, 2, -1),
                  "obs": eye.reshape(-1, 1, 1, n_contexts).expand(-1, 2, N_AGENTS, -1),
                  "avail_actions": th.ones(n_contexts, 2, N_AGENTS, N_ACTIONS, dtype=th.int)})
    with th.no_grad():
        probs = learner.mac.unroll(batch)[:, 0]  # [contexts, n, A]
    return probs[th.arange(n_contexts), :, th.arange(n_contexts)].mean().item()


@pytest.mark.parametrize("critic_type", ["ac_critic", "cv_critic"])
def test_learns_contextual_bandit(critic_type):
    n_contexts = N_ACTIONS
    th.manual_seed(0)
    args = make_args(state_shape=n_contexts + 1, obs_shape=n_contexts, critic_type=critic_type, epochs=4, lr=5e-3)
    scheme, groups, preprocess = scheme_and_groups(state_dim=n_contexts + 1, obs_dim=n_contexts)
    full_scheme = EpisodeBatch(scheme, groups, 1, 1, preprocess=preprocess).scheme
    mac = mac_REGISTRY[args.mac](full_scheme, groups, args)
    learner = PPOLearner(mac, full_scheme, RecordingLogger(), args)
    g = th.Generator().manual_seed(0)
    start = p_correct(learner, n_contexts)
    assert abs(start - 1 / N_ACTIONS) < 0.1
    for i in range(30):
        learner.train(bandit_batch(mac, 32, n_contexts, g), t_env=i, episode_num=i)
    assert p_correct(learner, n_contexts) > 0.9  # chance is 1/3; seeds 0-7 all reach > 0.99
