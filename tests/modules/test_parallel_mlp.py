"""ParallelMLP, the one per-agent batched MLP: its agents' layout computes each agent's own MLP, and it is the
AgentwiseMLP the non-shared critics had before issue 11 (same initial weights from the same seed, same outputs,
and that module's saved state loads)."""
import math

import torch as th

from modules.parallel_mlp import ParallelMLP

N, IN, HIDDEN, OUT = 3, 5, 8, 2


def agentwise_reference(seed):
    """The removed AgentwiseMLP's parameters as it drew them: per layer weight [n, in, out], then bias [n, out]."""
    th.manual_seed(seed)
    params = {}
    for k, (d_in, d_out) in enumerate([(IN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, OUT)], start=1):
        bound = 1.0 / math.sqrt(d_in)
        params[f"fc{k}.weight"] = th.empty(N, d_in, d_out).uniform_(-bound, bound)
        params[f"fc{k}.bias"] = th.empty(N, d_out).uniform_(-bound, bound)
    return params


def agentwise_forward(params, x):
    for k in (1, 2, 3):
        x = th.einsum("...ni,nio->...no", x, params[f"fc{k}.weight"]) + params[f"fc{k}.bias"]
        x = th.relu(x) if k < 3 else x
    return x


def test_per_agent_is_each_agents_own_mlp():
    th.manual_seed(0)
    net = ParallelMLP(N, IN, HIDDEN, OUT, n_layers=3)
    x = th.randn(4, 6, N, IN)
    out = net.per_agent(x)
    assert out.shape == (4, 6, N, OUT)
    for i in range(N):
        alone = net(x[..., i, :].reshape(-1, IN))[i].reshape(4, 6, OUT)
        assert th.allclose(out[..., i, :], alone, atol=1e-6)


def test_same_initial_weights_and_outputs_as_the_agentwise_mlp_it_replaced():
    reference = agentwise_reference(seed=7)
    th.manual_seed(7)
    net = ParallelMLP(N, IN, HIDDEN, OUT, n_layers=3)
    for k in range(3):
        assert th.equal(net.weights[k], reference[f"fc{k + 1}.weight"])
        assert th.equal(net.biases[k].squeeze(1), reference[f"fc{k + 1}.bias"])
    x = th.randn(4, 6, N, IN)
    assert th.allclose(net.per_agent(x), agentwise_forward(reference, x), atol=1e-6)


def test_loads_an_agentwise_mlp_state():
    reference = agentwise_reference(seed=1)
    th.manual_seed(2)
    net = ParallelMLP(N, IN, HIDDEN, OUT, n_layers=3)
    net.load_state_dict(reference)
    x = th.randn(5, N, IN)
    assert th.allclose(net.per_agent(x), agentwise_forward(reference, x), atol=1e-6)
    assert net.agentwise_order() == [0, 2, 4, 1, 3, 5]
