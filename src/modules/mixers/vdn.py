import torch.nn as nn


class VDNMixer(nn.Module):
    """Value decomposition: Q_tot is the plain sum of the chosen agent Qs."""

    def __init__(self, args=None):
        super().__init__()

    def forward(self, agent_qs, states=None, **extra):
        return agent_qs.sum(dim=-1, keepdim=True)
