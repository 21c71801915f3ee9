"""The shared critics' 3-layer MLP body (non-shared critics use modules.parallel_mlp.ParallelMLP)."""
import math

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


def vdim(scheme, key):
    shape = scheme[key]["vshape"]
    return shape if isinstance(shape, int) else int(math.prod(shape))
