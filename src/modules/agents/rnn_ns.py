import torch as th
from torch import nn

from modules.agents.rnn import RNNAgent


class RNNNSAgent(nn.Module):
    """One RNNAgent per agent (no parameter sharing), for `mac: non_shared_mac`."""

    recurrent = True  # learners run it over whole sequences (use_rnn False included: the safe default)

    def __init__(self, input_shape, args, n_outputs=None):
        super().__init__()
        self.n_agents = args.n_agents
        self.hidden_dim = args.hidden_dim
        self.agents = nn.ModuleList(RNNAgent(input_shape, args, n_outputs) for _ in range(self.n_agents))

    def init_hidden(self, batch_size, n_agents):
        return self.agents[0].init_hidden(batch_size, n_agents)

    def forward(self, inputs, hidden):
        out, h = self.forward_seq(inputs.unsqueeze(1), hidden)
        return out.squeeze(1), h

    def forward_seq(self, inputs, hidden):
        outs, hs = zip(*(agent.forward_seq(inputs[:, :, i:i + 1], hidden[:, i:i + 1])
                         for i, agent in enumerate(self.agents)))
        return th.cat(outs, dim=2), th.cat(hs, dim=1)
