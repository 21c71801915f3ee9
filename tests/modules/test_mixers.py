import itertools

import pytest
import torch
import torch.nn.functional as F

from helpers import config_args
from modules.mixers import REGISTRY
from modules.mixers.qatten import QattenMixer
from modules.mixers.qmix import QMixer
from modules.mixers.qplex import QPLEXMixer

N_ACTIONS = 3
OBS_DIM = 6


# the config each mixer comes with (its settings are those runs use: lmix is OMIGA's, with omiga.yaml's width)
MIXER_ALG = {"lmix": "omiga", "linear": "misodice"}


def make_args(n_agents, state_dim, mixer="qmix", n_actions=N_ACTIONS, obs_dim=OBS_DIM, **kw):
    return config_args(MIXER_ALG.get(mixer, "qmix"), n_agents=n_agents, n_actions=n_actions, state_shape=state_dim,
                       obs_shape=obs_dim, **kw)


def make_batch(b, t, n, s, n_actions=N_ACTIONS, obs_dim=OBS_DIM, seed=0):
    """Random inputs with the learner's extras; chosen actions are not all greedy, so A_i < 0."""
    g = torch.Generator().manual_seed(seed)
    agent_qs = torch.randn(b, t, n, generator=g)
    states = torch.randn(b, t, s, generator=g)
    max_qs = agent_qs + torch.rand(b, t, n, generator=g)
    actions = torch.randint(0, n_actions, (b, t, n), generator=g)
    extras = dict(
        actions_onehot=F.one_hot(actions, n_actions).float(),
        max_qs=max_qs,
        obs=torch.randn(b, t, n, obs_dim, generator=g),
    )
    return agent_qs, states, extras


# qllm is training-free and needs a TFCAF file: tests/modules/test_qllm_mixer.py covers it
LEARNED = sorted(k for k in REGISTRY if k != "qllm")


def test_registry_contents():
    assert set(REGISTRY) == {"vdn", "qmix", "qplex", "qatten", "qllm", "lmix", "linear"}


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("b,t,n,s", [(3, 1, 2, 5), (2, 7, 4, 9)])
def test_shape_and_gradients(name, b, t, n, s):
    torch.manual_seed(0)
    mixer = REGISTRY[name](make_args(n, s, name))
    agent_qs, states, extras = make_batch(b, t, n, s)
    agent_qs.requires_grad_(True)
    q_tot = mixer(agent_qs, states, **extras)
    assert q_tot.shape == (b, t, 1)
    assert torch.isfinite(q_tot).all()
    q_tot.pow(2).sum().backward()
    assert agent_qs.grad is not None and agent_qs.grad.abs().sum() > 0
    for pname, p in mixer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"


def test_vdn_is_sum():
    agent_qs, states, extras = make_batch(4, 5, 3, 7)
    q_tot = REGISTRY["vdn"](make_args(3, 7))(agent_qs, states, **extras)
    assert torch.allclose(q_tot, agent_qs.sum(-1, keepdim=True))


def test_linear_mixer_is_state_independent_nonnegative_and_starts_as_vdn():
    mixer = REGISTRY["linear"](make_args(3, 7, "linear"))
    agent_qs, states, extras = make_batch(4, 5, 3, 7)
    assert torch.allclose(mixer(agent_qs, states, **extras), agent_qs.sum(-1, keepdim=True))
    with torch.no_grad():
        mixer.raw_w.copy_(torch.tensor([-2.0, 0.5, 1.0]))
        mixer.bias.fill_(0.3)
    w, b = mixer.weights(states)
    assert torch.equal(w[0, 0], torch.tensor([2.0, 0.5, 1.0])) and (w == w[0, 0]).all() and (b == 0.3).all()
    assert torch.allclose(mixer(agent_qs, states), (w * agent_qs).sum(-1, keepdim=True) + 0.3)


def test_batch_rows_are_independent():
    # A mixer must not mix information across batch/time entries.
    torch.manual_seed(0)
    agent_qs, states, extras = make_batch(4, 5, 3, 7)
    for name in LEARNED:
        cls = REGISTRY[name]
        mixer = cls(make_args(3, 7, name))
        full = mixer(agent_qs, states, **extras)
        one = mixer(agent_qs[1:2, 2:3], states[1:2, 2:3], **{k: v[1:2, 2:3] for k, v in extras.items()})
        assert torch.allclose(full[1:2, 2:3], one, atol=1e-6), name


@pytest.mark.parametrize(
    "make",
    [
        lambda: QMixer(make_args(4, 8, hypernet_layers=1)),
        lambda: QMixer(make_args(4, 8, hypernet_layers=2)),
        lambda: QattenMixer(make_args(4, 8, weighted_head=True)),
        lambda: QattenMixer(make_args(4, 8, weighted_head=False)),
        lambda: REGISTRY["lmix"](make_args(4, 8, "lmix")),
        lambda: REGISTRY["linear"](make_args(4, 8, "linear")),
    ],
)
def test_monotonic(make):
    torch.manual_seed(1)
    mixer = make()
    agent_qs, states, extras = make_batch(16, 8, 4, 8, seed=3)
    agent_qs = (3 * agent_qs).requires_grad_(True)
    # Each q_tot depends only on its own row, so grad of the sum is the per-row derivative.
    mixer(agent_qs, states, **extras).sum().backward()
    assert (agent_qs.grad >= 0).all()
    assert (agent_qs.grad > 0).any()


def _joint_inputs(q_tables, state):
    """All joint actions for per-agent Q tables [n, A] as one batch of size A**n (T=1)."""
    n, a = q_tables.shape
    joint = torch.tensor(list(itertools.product(range(a), repeat=n)))  # [A**n, n]
    agent_qs = q_tables.gather(1, joint.t()).t()  # [A**n, n]
    m = joint.shape[0]
    max_qs = q_tables.max(dim=1).values.expand(m, n)
    return (
        joint,
        agent_qs.unsqueeze(1),
        state.expand(m, 1, -1),
        dict(max_qs=max_qs.unsqueeze(1), actions_onehot=F.one_hot(joint, a).float().unsqueeze(1)),
    )


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("minus_one,stop_grad", [(True, True), (False, False)])
def test_qplex_igm(n, minus_one, stop_grad):
    s_dim = 5
    for seed in range(5):
        torch.manual_seed(seed)
        mixer = QPLEXMixer(make_args(n, s_dim, is_minus_one=minus_one, is_stop_gradient=stop_grad))
        q_tables = 2 * torch.randn(n, N_ACTIONS)
        state = torch.randn(1, 1, s_dim)
        joint, agent_qs, states, extras = _joint_inputs(q_tables, state)
        with torch.no_grad():
            q_tot = mixer(agent_qs, states, **extras).view(-1)
            v_tot = mixer.v_tot(extras["max_qs"], states).view(-1)
        greedy = (joint == q_tables.argmax(dim=1)).all(dim=1)
        assert greedy.sum() == 1
        # Greedy joint action attains V_tot (all A_i = 0) and strictly beats all others.
        assert torch.allclose(q_tot[greedy], v_tot[greedy], atol=1e-5)
        assert (q_tot[~greedy] < q_tot[greedy] - 1e-6).all()
        assert torch.allclose(v_tot, v_tot[0].expand_as(v_tot))


def test_qplex_greedy_equals_v_tot_batched():
    torch.manual_seed(0)
    mixer = QPLEXMixer(make_args(3, 7))
    agent_qs, states, extras = make_batch(4, 6, 3, 7)
    extras["max_qs"] = agent_qs  # chosen actions are greedy: A_i = 0
    assert torch.allclose(mixer(agent_qs, states, **extras), mixer.v_tot(agent_qs, states), atol=1e-6)


def test_qplex_requires_extras():
    agent_qs, states, _ = make_batch(2, 3, 2, 4)
    with pytest.raises(ValueError):
        QPLEXMixer(make_args(2, 4))(agent_qs, states)


def _fit_problem(n=2, s_dim=4):
    agent_qs, states, extras = make_batch(32, 4, n, s_dim, seed=7)
    # Qatten keys come from obs: give agents distinguishable observations.
    extras["obs"][..., :n] = torch.eye(n)
    target = 2 * agent_qs[..., :1] + agent_qs[..., 1:2] + states[..., :1]
    return agent_qs, states, extras, target


def test_fit_target_is_not_trivial():
    # Control for the fit test: plain VDN (no state, equal weights) cannot match it.
    agent_qs, states, extras, target = _fit_problem()
    assert F.mse_loss(REGISTRY["vdn"]()(agent_qs, states), target).item() > 1.0


@pytest.mark.parametrize("name", ["qmix", "qplex", "qatten"])
def test_fit_monotone_target(name):
    torch.manual_seed(0)
    agent_qs, states, extras, target = _fit_problem()
    mixer = REGISTRY[name](make_args(2, 4, name))
    opt = torch.optim.Adam(mixer.parameters(), lr=3e-3)
    for _ in range(300):
        loss = F.mse_loss(mixer(agent_qs, states, **extras), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Target variance is about 6; require the fit to explain > 99.5% of it.
    assert loss.item() < 0.03, loss.item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("name", LEARNED)
def test_cuda_matches_cpu(name):
    torch.manual_seed(0)
    mixer = REGISTRY[name](make_args(3, 7, name))
    agent_qs, states, extras = make_batch(2, 5, 3, 7)
    cpu = mixer(agent_qs, states, **extras)
    dev = torch.device("cuda")
    gpu = mixer.to(dev)(agent_qs.to(dev), states.to(dev), **{k: v.to(dev) for k, v in extras.items()})
    assert gpu.device.type == "cuda"
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4)


class FlatMixer(torch.nn.Module):
    """A mixer that forgets the trailing 1 of Q_tot: [B, T]."""
    def __init__(self, args):
        super().__init__()

    def forward(self, agent_qs, states, **extra):
        return agent_qs.sum(dim=2)


def test_q_learner_names_a_mixer_of_the_wrong_shape(monkeypatch):
    from components.episode_buffer import ReplayBuffer, episode_scheme
    from helpers import make_ctx

    monkeypatch.setitem(REGISTRY, "flat", FlatMixer)
    ctx = make_ctx("qmix", "matrix_game", mixer="flat", hidden_dim=8, use_cuda=False, env_args={"episode_limit": 4})
    scheme, groups, preprocess = episode_scheme(ctx.runner.get_env_info())
    buffer = ReplayBuffer(scheme, groups, 2, ctx.args.episode_limit + 1, preprocess=preprocess)
    for _ in range(2):
        buffer.insert_episode_batch(ctx.runner.run(test_mode=False))
    batch = buffer.latest(2)
    with pytest.raises(ValueError, match=r"mixer 'flat' \(FlatMixer\) returned Q_tot of shape \(2, \d+\); its forward "
                                         r"must return \[B, T, 1\] = \(2, \d+, 1\)"):
        ctx.learner.train(batch, 1, 1)
