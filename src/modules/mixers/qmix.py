import torch.nn as nn
import torch.nn.functional as F


def _hypernet(in_dim, out_dim, layers, hidden):
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    if layers == 2:
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
    raise ValueError(f"hypernet_layers must be 1 or 2, got {layers}")


class QMixer(nn.Module):
    """QMIX: a 2-layer mixing net whose weights are produced from the state.

    Weights pass through abs() so Q_tot is monotone in every agent Q.
    Reads args: mixing_embed_dim, hypernet_layers, hypernet_embed (defaults in config/default.yaml).
    """

    def __init__(self, args):
        super().__init__()
        self.n_agents = args.n_agents
        self.state_dim = int(args.state_shape)
        self.embed_dim = args.mixing_embed_dim
        layers = args.hypernet_layers
        hidden = args.hypernet_embed

        self.hyper_w_1 = _hypernet(self.state_dim, self.embed_dim * self.n_agents, layers, hidden)
        self.hyper_w_final = _hypernet(self.state_dim, self.embed_dim, layers, hidden)
        self.hyper_b_1 = nn.Linear(self.state_dim, self.embed_dim)
        # State value replaces the final bias.
        self.V = nn.Sequential(nn.Linear(self.state_dim, self.embed_dim), nn.ReLU(), nn.Linear(self.embed_dim, 1))

    def forward(self, agent_qs, states, **extra):
        lead = agent_qs.shape[:-1]
        qs = agent_qs.reshape(-1, 1, self.n_agents)
        s = states.reshape(-1, self.state_dim)

        w1 = self.hyper_w_1(s).abs().view(-1, self.n_agents, self.embed_dim)
        b1 = self.hyper_b_1(s).view(-1, 1, self.embed_dim)
        hidden = F.elu(qs @ w1 + b1)

        w_final = self.hyper_w_final(s).abs().view(-1, self.embed_dim, 1)
        v = self.V(s).view(-1, 1, 1)
        y = hidden @ w_final + v
        return y.reshape(*lead, 1)
