import torch as th
import torch.nn as nn


class LinearMixer(nn.Module):
    """MisoDICE Sec. 5.2's mixer: v_tot = sum_i phi_i v_i + phi_0 with phi_i = |raw_i| >= 0, independent of the state.

    Linear in both the agent values and phi, so a DICE value objective stays convex in (phi, v) (MisoDICE
    Prop. 5.1), which a state-dependent hypernetwork (lmix) gives up in phi. phi_i starts at 1 (VDN) and phi_0 at 0.
    `weights(states)` returns (w [..., n], b [..., 1]) broadcast over the state's leading dims, as lmix does.
    """

    def __init__(self, args):
        super().__init__()
        self.n_agents = args.n_agents
        self.raw_w = nn.Parameter(th.ones(self.n_agents))
        self.bias = nn.Parameter(th.zeros(1))

    def weights(self, states):
        lead = states.shape[:-1]
        return self.raw_w.abs().expand(*lead, self.n_agents), self.bias.expand(*lead, 1)

    def forward(self, agent_qs, states, **extra):
        w, b = self.weights(states)
        return (w * agent_qs).sum(dim=-1, keepdim=True) + b
