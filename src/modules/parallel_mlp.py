"""The one batched MLP with independent weights per head (per agent, per attention head, per kernel): used by the
non-shared critics and the qplex/qatten mixers."""
import math
import re

import torch
import torch.nn as nn

# the per-agent critic MLP before issue 11 (AgentwiseMLP): fc{k}.weight [n, in, out], fc{k}.bias [n, out]
_AGENTWISE_KEY = re.compile(r"fc(\d+)\.(weight|bias)$")


class ParallelMLP(nn.Module):
    """`n_heads` independent MLPs evaluated with one batched matmul per layer.

    x: [N, in_dim] (shared by all heads) or [n_heads, N, in_dim] -> [n_heads, N, out_dim]; `per_agent` takes the
    agents' layout [..., n_heads, in_dim] instead. ReLU between layers; n_layers=1 is a plain linear map.
    """

    def __init__(self, n_heads, in_dim, hidden_dim, out_dim, n_layers=1):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            # Same scale as nn.Linear's default init.
            bound = 1.0 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(torch.empty(n_heads, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_heads, 1, d_out).uniform_(-bound, bound)))
        self.register_load_state_dict_pre_hook(_from_agentwise)

    def forward(self, x):
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.matmul(x, w) + b
            if i < last:
                x = torch.relu(x)
        return x

    def per_agent(self, x):
        """[..., n_heads, in_dim] -> [..., n_heads, out_dim]: one transpose in and out, not one per layer."""
        lead, (n, d) = x.shape[:-2], x.shape[-2:]
        out = self(x.reshape(-1, n, d).transpose(0, 1))
        return out.transpose(0, 1).reshape(*lead, n, -1)

    def agentwise_order(self):
        """For each parameter, its index in the AgentwiseMLP this replaced (fc1.weight, fc1.bias, fc2.weight, ...):
        how to reorder per-parameter state saved for one (an optimiser's moments)."""
        n_layers = len(self.weights)
        return [2 * k for k in range(n_layers)] + [2 * k + 1 for k in range(n_layers)]


def _from_agentwise(module, state, prefix, *args):
    """Loads the state of the AgentwiseMLP this replaced: same numbers, other names and bias shapes."""
    for key in [k for k in state if k.startswith(prefix)]:
        match = _AGENTWISE_KEY.fullmatch(key[len(prefix):])
        if match:
            layer, value = int(match[1]) - 1, state.pop(key)
            if match[2] == "weight":
                state[f"{prefix}weights.{layer}"] = value
            else:
                state[f"{prefix}biases.{layer}"] = value.unsqueeze(-2)
