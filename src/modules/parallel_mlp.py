import math

import torch
import torch.nn as nn


class ParallelMLP(nn.Module):
    """`n_heads` independent MLPs evaluated with one batched matmul per layer.

    x: [N, in_dim] (shared by all heads) or [n_heads, N, in_dim] -> [n_heads, N, out_dim].
    ReLU between layers; n_layers=1 is a plain linear map.
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

    def forward(self, x):
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.matmul(x, w) + b
            if i < last:
                x = torch.relu(x)
        return x
