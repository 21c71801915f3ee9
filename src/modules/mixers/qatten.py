import math

import torch
import torch.nn as nn

from modules.parallel_mlp import ParallelMLP


class QattenMixer(nn.Module):
    """Qatten: Q_tot = sum_h c_h(s) sum_i lambda_{i,h} Q_i + V(s).

    lambda_{., h} is a softmax over agents of <query_h(s), key_h(o_i)>, so it is
    non-negative; c_h(s) = |head_net(s)| (or 1 without weighted_head). Q_tot is
    therefore monotone in every Q_i. Keys come from each agent's observation
    (the `obs` extra) rather than SMAC unit features, so any env works.

    Reads args (pymarl2 names; defaults in config/default.yaml):
      n_query_embedding_layer1: hidden width of the per-head state->query MLP
      n_query_embedding_layer2: query/key dimension
      n_key_embedding_layer1: key dimension; must equal n_query_embedding_layer2
      n_head_embedding_layer1: hidden width of the state->head-weight MLP
      n_head_embedding_layer2: head-weight outputs; must equal n_attention_head
      n_attention_head: number of attention heads
      n_constrant_value: hidden width of the state-value bias V(s)
      weighted_head: weight heads by |c_h(s)| instead of summing them
    """

    def __init__(self, args):
        super().__init__()
        self.n_agents = args.n_agents
        self.state_dim = int(args.state_shape)
        self.obs_dim = int(args.obs_shape)
        q_hidden = args.n_query_embedding_layer1
        self.embed_dim = args.n_query_embedding_layer2
        key_dim = args.n_key_embedding_layer1
        head_hidden = args.n_head_embedding_layer1
        self.n_heads = args.n_attention_head
        head_out = args.n_head_embedding_layer2
        v_hidden = args.n_constrant_value
        self.weighted_head = args.weighted_head
        if key_dim != self.embed_dim:
            raise ValueError("n_key_embedding_layer1 must equal n_query_embedding_layer2")
        if head_out != self.n_heads:
            raise ValueError("n_head_embedding_layer2 must equal n_attention_head")

        s, h = self.state_dim, self.n_heads
        self.query_net = ParallelMLP(h, s, q_hidden, self.embed_dim, n_layers=2)
        self.key_net = ParallelMLP(h, self.obs_dim, 0, self.embed_dim, n_layers=1)
        if self.weighted_head:
            self.head_net = nn.Sequential(nn.Linear(s, head_hidden), nn.ReLU(), nn.Linear(head_hidden, h))
        self.V = nn.Sequential(nn.Linear(s, v_hidden), nn.ReLU(), nn.Linear(v_hidden, 1))

    def attention(self, states, obs):
        """Per-head agent weights [H, N, n] (rows sum to 1) for flat states [N, S], obs [N, n, O]."""
        n_flat = states.shape[0]
        query = self.query_net(states)  # [H, N, E]
        keys = self.key_net(obs.reshape(-1, self.obs_dim))  # [H, N*n, E]
        keys = keys.view(self.n_heads, n_flat, self.n_agents, self.embed_dim)
        logits = torch.matmul(keys, query.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.embed_dim)
        return torch.softmax(logits, dim=-1)

    def forward(self, agent_qs, states, obs=None, **extra):
        if obs is None:
            raise ValueError("QattenMixer needs the obs extra")
        lead = agent_qs.shape[:-1]
        qs = agent_qs.reshape(-1, self.n_agents)
        s = states.reshape(-1, self.state_dim)
        o = obs.reshape(-1, self.n_agents, self.obs_dim).to(s.dtype)

        head_qs = (self.attention(s, o) * qs.unsqueeze(0)).sum(dim=-1)  # [H, N]
        if self.weighted_head:
            y = (self.head_net(s).abs() * head_qs.t()).sum(dim=-1, keepdim=True)
        else:
            y = head_qs.sum(dim=0).unsqueeze(-1)
        return (y + self.V(s)).reshape(*lead, 1)
