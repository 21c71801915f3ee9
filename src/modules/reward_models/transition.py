"""A team reward model r(s_t, a_t, s_{t+1}) of one transition: the global state before and after and every agent's
action (one-hot). Both states, because a reward is earned by a transition (in LBF the food disappears in s_{t+1});
the joint action, because the same states can follow from different actions."""
import torch as th
from torch import nn

from modules.critics.mlp import MLP


class TransitionReward(nn.Module):
    def __init__(self, state_dim, n_agents, n_actions, hidden_dim):
        super().__init__()
        self.net = MLP(2 * state_dim + n_agents * n_actions, hidden_dim, 1)

    def forward(self, states, actions_onehot):
        """states [B, T, S], actions_onehot [B, T, n, A] -> rewards [B, T-1, 1] of the T-1 transitions."""
        b, t = actions_onehot.shape[:2]
        joint = actions_onehot[:, :-1].reshape(b, t - 1, -1)
        return self.net(th.cat([states[:, :-1], joint, states[:, 1:]], dim=-1))
