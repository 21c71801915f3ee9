import torch.nn as nn
import torch.nn.functional as F


class LMixer(nn.Module):
    """OMIGA's mixer: Q_tot = sum_i w_i(s) Q_i + b(s), linear in the agent values with state-dependent weights.

    w = |W2 relu(W1 s)| >= 0 and b = B2 relu(W1 s) share the state embedding (the original OMIGA MixNet; the
    OffPyMARL port drops the ReLU). Linearity is what lets OMIGA turn the global value regulariser into
    per-agent ones; `weights` exposes (w, b) for that. Reads args: mixing_embed_dim (omiga.yaml: 64, OMIGA's value).
    """

    def __init__(self, args):
        super().__init__()
        self.n_agents = args.n_agents
        self.state_dim = int(args.state_shape)
        embed_dim = args.mixing_embed_dim
        self.embed = nn.Linear(self.state_dim, embed_dim)
        self.hyper_w = nn.Linear(embed_dim, self.n_agents)
        self.hyper_b = nn.Linear(embed_dim, 1)

    def weights(self, states):
        """states [..., S] -> (w [..., n] >= 0, b [..., 1])."""
        x = F.relu(self.embed(states))
        return self.hyper_w(x).abs(), self.hyper_b(x)

    def forward(self, agent_qs, states, **extra):
        w, b = self.weights(states)
        return (w * agent_qs).sum(dim=-1, keepdim=True) + b
