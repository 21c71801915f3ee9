import torch.nn.functional as F
from torch import nn


class MLPAgent(nn.Module):
    """Feed-forward agent (no memory); the hidden state is carried through unchanged."""

    recurrent = False  # each row on its own: learners may evaluate only the real (unpadded) steps

    def __init__(self, input_shape, args, n_outputs=None):
        super().__init__()
        self.hidden_dim = args.hidden_dim
        self.fc1 = nn.Linear(input_shape, args.hidden_dim)
        self.fc2 = nn.Linear(args.hidden_dim, args.hidden_dim)
        self.fc3 = nn.Linear(args.hidden_dim, n_outputs or args.n_actions)

    def init_hidden(self, batch_size, n_agents):
        return self.fc1.weight.new_zeros(batch_size, n_agents, self.hidden_dim)

    def forward(self, inputs, hidden):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(inputs))))), hidden

    forward_seq = forward
