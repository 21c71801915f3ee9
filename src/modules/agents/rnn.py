import torch.nn.functional as F
from torch import nn


class RNNAgent(nn.Module):
    """fc -> ReLU -> GRU -> fc, as pymarl's RNNAgent, with `use_rnn: False` giving an MLP body."""

    recurrent = True  # learners run it over whole sequences (use_rnn False included: the safe default)

    def __init__(self, input_shape, args, n_outputs=None):
        super().__init__()
        self.hidden_dim = args.hidden_dim
        self.use_rnn = args.use_rnn
        self.fc1 = nn.Linear(input_shape, args.hidden_dim)
        if self.use_rnn:
            # nn.GRU (not GRUCell) so that learners unroll whole sequences in one kernel call
            self.rnn = nn.GRU(args.hidden_dim, args.hidden_dim, batch_first=True)
        else:
            self.rnn = nn.Linear(args.hidden_dim, args.hidden_dim)
        self.fc2 = nn.Linear(args.hidden_dim, n_outputs or args.n_actions)

    def init_hidden(self, batch_size, n_agents):
        return self.fc1.weight.new_zeros(batch_size, n_agents, self.hidden_dim)

    def forward(self, inputs, hidden):
        out, h = self.forward_seq(inputs.unsqueeze(1), hidden)
        return out.squeeze(1), h

    def forward_seq(self, inputs, hidden):
        b, t, n, _ = inputs.shape
        x = F.relu(self.fc1(inputs))
        if self.use_rnn:
            x = x.transpose(1, 2).reshape(b * n, t, -1)
            x, h = self.rnn(x, hidden.reshape(1, b * n, -1))
            x = x.reshape(b, n, t, -1).transpose(1, 2)
            h = h.reshape(b, n, -1)
        else:
            x = F.relu(self.rnn(x))
            h = hidden
        return self.fc2(x), h
