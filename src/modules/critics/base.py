"""State-value critics V_i for actor-critic learners: `forward(batch) -> [B, T, n, 1]` for all timesteps."""
import torch as th
from torch import nn

from modules.critics.mlp import MLP
from modules.parallel_mlp import ParallelMLP


def critic_hidden_dim(args):
    return args.critic_hidden_dim or args.hidden_dim


class VCritic(nn.Module):
    """Subclasses list their per-agent inputs in `_inputs`; the agent id is appended only when weights are shared
    (separate networks already know which agent they serve)."""

    shared = True

    def __init__(self, scheme, args):
        super().__init__()
        self.args = args
        self.n_agents = args.n_agents
        hidden = critic_hidden_dim(args)
        in_dim = self._input_dim(scheme) + (self.n_agents if self.shared else 0)
        self.net = MLP(in_dim, hidden) if self.shared else ParallelMLP(self.n_agents, in_dim, hidden, 1, n_layers=3)

    def forward(self, batch):
        device = next(self.parameters()).device
        inputs = self._inputs(batch)
        if self.shared:
            b, t = inputs[0].shape[:2]
            eye = th.eye(self.n_agents, device=inputs[0].device)
            inputs.append(eye.expand(b, t, -1, -1))
        x = th.cat(inputs, dim=-1).to(device)
        return self.net(x) if self.shared else self.net.per_agent(x)

    def _input_dim(self, scheme):
        raise NotImplementedError

    def _inputs(self, batch):
        """List of [B, T, n, *] tensors."""
        raise NotImplementedError
