"""3-layer MLP bodies for critics: one shared network, or independent weights per agent."""
import math

import torch as th
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_dim, hidden_dim, out_dim=1):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class AgentwiseLinear(nn.Module):
    """n independent Linear layers applied to x[..., i, :] in one batched matmul (no loop over agents)."""

    def __init__(self, n_agents, in_dim, out_dim):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init range
        self.weight = nn.Parameter(th.empty(n_agents, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(th.empty(n_agents, out_dim).uniform_(-bound, bound))

    def forward(self, x):
        return th.einsum("...ni,nio->...no", x, self.weight) + self.bias


class AgentwiseMLP(nn.Module):
    """One MLP per agent; input [..., n, in] -> [..., n, out]."""

    def __init__(self, n_agents, in_dim, hidden_dim, out_dim=1):
        super().__init__()
        self.fc1 = AgentwiseLinear(n_agents, in_dim, hidden_dim)
        self.fc2 = AgentwiseLinear(n_agents, hidden_dim, hidden_dim)
        self.fc3 = AgentwiseLinear(n_agents, hidden_dim, out_dim)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def vdim(scheme, key):
    shape = scheme[key]["vshape"]
    return shape if isinstance(shape, int) else int(math.prod(shape))
