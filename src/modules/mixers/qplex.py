
import torch
import torch.nn as nn

from modules.parallel_mlp import ParallelMLP


class QPLEXMixer(nn.Module):
    """QPLEX duplex dueling mixer (pymarl2 `dmaq_general` semantics).

    With V_i = max_qs_i and A_i = Q_i - V_i, each agent is first transformed by
    state-dependent w_i(s) > 0 and b_i(s):  V'_i = w_i V_i + b_i,  A'_i = w_i A_i.
    Then
        Q_tot = sum_i V'_i + sum_i lambda_i(s, a) A'_i,
        lambda_i = sum_k |key_k(s)| * sigmoid(agent_k(s))_i * sigmoid(action_k(s, a))_i > 0.
    Since A'_i <= 0 and lambda_i > 0, the per-agent argmaxes maximise Q_tot (IGM).

    It is computed as sum_i (w_i Q_i + b_i) + sum_i (lambda_i - 1) A'_i (is_minus_one,
    as in pymarl2; without it the advantage weight is effectively 1 + lambda_i), with
    A'_i detached in the second sum (is_stop_gradient) so agent Qs get their gradient
    through the monotone first term only. One forward call gives the full Q_tot.

    Reads args: hypernet_embed, adv_hypernet_layers, adv_hypernet_embed, num_kernel, is_minus_one,
    is_stop_gradient (defaults in config/default.yaml).
    Needs forward extras `max_qs` [..., n] and `actions_onehot` [..., n, A].
    """

    def __init__(self, args):
        super().__init__()
        self.n_agents = args.n_agents
        self.n_actions = args.n_actions
        self.state_dim = int(args.state_shape)
        hidden = args.hypernet_embed
        adv_layers = args.adv_hypernet_layers
        adv_hidden = args.adv_hypernet_embed
        n_kernel = args.num_kernel
        self.is_minus_one = args.is_minus_one
        self.stop_gradient = args.is_stop_gradient

        n, s = self.n_agents, self.state_dim
        self.hyper_w = nn.Sequential(nn.Linear(s, hidden), nn.ReLU(), nn.Linear(hidden, n))
        self.hyper_b = nn.Sequential(nn.Linear(s, hidden), nn.ReLU(), nn.Linear(hidden, n))

        sa_dim = s + n * self.n_actions
        self.key_ext = ParallelMLP(n_kernel, s, adv_hidden, 1, adv_layers)
        self.agents_ext = ParallelMLP(n_kernel, s, adv_hidden, n, adv_layers)
        self.action_ext = ParallelMLP(n_kernel, sa_dim, adv_hidden, n, adv_layers)

    def transform(self, states):
        """Per-agent w_i(s) > 0 and b_i(s), each [N, n] for flat states [N, S]."""
        w = self.hyper_w(states).abs() + 1e-10
        return w, self.hyper_b(states)

    def lambda_weights(self, states, actions_onehot):
        """lambda_i(s, a) > 0, [N, n], for flat states [N, S] and actions [N, n*A]."""
        sa = torch.cat([states, actions_onehot], dim=-1)
        key = self.key_ext(states).abs() + 1e-10  # [K, N, 1]
        agents = torch.sigmoid(self.agents_ext(states))  # [K, N, n]
        action = torch.sigmoid(self.action_ext(sa))  # [K, N, n]
        return (key * agents * action).sum(dim=0)

    def v_tot(self, max_qs, states):
        """V_tot = sum_i (w_i(s) V_i + b_i(s)); Q_tot equals this at the greedy joint action."""
        lead = max_qs.shape[:-1]
        w, b = self.transform(states.reshape(-1, self.state_dim))
        v = (w * max_qs.reshape(-1, self.n_agents) + b).sum(dim=-1, keepdim=True)
        return v.reshape(*lead, 1)

    def forward(self, agent_qs, states, max_qs=None, actions_onehot=None, **extra):
        if max_qs is None or actions_onehot is None:
            raise ValueError("QPLEXMixer needs the max_qs and actions_onehot extras")
        lead = agent_qs.shape[:-1]
        n = self.n_agents
        qs = agent_qs.reshape(-1, n)
        vs = max_qs.reshape(-1, n)
        s = states.reshape(-1, self.state_dim)
        acts = actions_onehot.reshape(-1, n * self.n_actions).to(s.dtype)

        w, b = self.transform(s)
        q_part = (w * qs + b).sum(dim=-1, keepdim=True)  # = V_tot + sum_i A'_i

        adv = w * (qs - vs)
        if self.stop_gradient:
            adv = adv.detach()
        lam = self.lambda_weights(s, acts)
        if self.is_minus_one:
            adv_part = (adv * (lam - 1.0)).sum(dim=-1, keepdim=True)
        else:
            adv_part = (adv * lam).sum(dim=-1, keepdim=True)
        return (q_part + adv_part).reshape(*lead, 1)
