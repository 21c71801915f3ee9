"""LCA potentials sigma_g: one small MLP per group of interchangeable agents, and the confidence-weighted
Bradley-Terry loss they are trained with (paper 003, Eq. 3).

    Potential(input_dim, hidden_dim)    x [..., D] -> score [...]   (D -> h -> h -> 1, ReLU, linear head)
    bt_loss(delta, p)                   per-row loss -[p log sig(delta) + (1 - p) log sig(-delta)], delta = s' - s
    encoder_spec(attrs, groups)         which agents share a model and which observation dims each model reads

Decisions:
- Linear head (no output ReLU, unlike the predecessor's scoring model): scores can be negative, and a ReLU at the end
  would flatten every state it maps below 0 to one potential (zero reward between them).
- The soft label p = yes / (yes + no) of a row's K votes (Rankings.p_helps). Eq. 3 is an expectation over pairs, so
  each row weighs 1 whatever its vote count; with K votes on every row the mean equals the hard-label BT loss on the
  K duplicated rows (tests check it). logsigmoid keeps large |delta| finite.
- Groups (`lca.groups`): auto = the env's roles as the rankings record them (attrs groups / agent_groups, from
  env.agent_roles()), shared = one model for all agents, per_agent = one model each.
- Input: the agent's ego-first observation. A model shared by several agents never sees the identity fields
  (attrs identity_dims: role one-hot, agent id): with them, "ego is agent 0" and "ego is agent 1" would be different
  states and the shared model would not be the paper's exchangeable sigma (Eq. 5). A one-agent model keeps them
  (they are constant there).
"""
import re

import torch.nn.functional as F
from torch import nn

from utils.config import CHOICES, ConfigError

GROUP_MODES = CHOICES["lca.groups"]  # auto | shared | per_agent


class Potential(nn.Module):
    """sigma_g: [..., input_dim] float -> [...] scores."""

    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.input_dim, self.hidden_dim = int(input_dim), int(hidden_dim)
        self.net = nn.Sequential(nn.Linear(self.input_dim, self.hidden_dim), nn.ReLU(),
                                 nn.Linear(self.hidden_dim, self.hidden_dim), nn.ReLU(),
                                 nn.Linear(self.hidden_dim, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def bt_loss(delta, p):
    """[P] confidence-weighted Bradley-Terry loss of score differences `delta` = sigma(o') - sigma(o) [P] under soft
    labels `p` [P] (the fraction of votes saying agent i's action helped, i.e. o' preferred)."""
    return -(p * F.logsigmoid(delta) + (1 - p) * F.logsigmoid(-delta))


def file_name(group):
    """potential_<group>.pt with the group's name made safe for a file name."""
    return "potential_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", str(group)) + ".pt"


def encoder_spec(attrs, groups="auto"):
    """The models and their inputs for rankings `attrs` (rankings.py) under `lca.groups` mode `groups`:
    {"obs_shape": [O], "identity_dims": [...], "groups": [names], "agent_groups": [group of each agent],
     "inputs": {name: obs dims the model reads}, "dropped": {name: identity dims it does not read}}."""
    if groups not in GROUP_MODES:
        raise ConfigError(f"lca.groups must be one of {list(GROUP_MODES)}, got {groups!r}")
    n = int(attrs["n_agents"])
    obs_dim = int(list(attrs["obs_shape"])[-1]) if list(attrs["obs_shape"]) else 1
    identity = sorted(int(d) for d in attrs["identity_dims"])
    if any(not 0 <= d < obs_dim for d in identity):
        raise ValueError(f"rankings identity_dims {identity} lie outside the observation (size {obs_dim}); "
                         f"rebuild the rankings with --config=lca_label")
    if groups == "auto":
        names, agent_groups = [str(g) for g in attrs["groups"]], [int(g) for g in attrs["agent_groups"]]
        if len(agent_groups) != n or any(not 0 <= g < len(names) for g in agent_groups):
            raise ValueError(f"rankings agent_groups {agent_groups} do not give one of the groups {names} to each of "
                             f"the {n} agents; rebuild the rankings with --config=lca_label")
    elif groups == "shared":
        names, agent_groups = ["shared"], [0] * n
    else:
        names, agent_groups = [f"agent{i}" for i in range(n)], list(range(n))
    if len({file_name(g) for g in names}) != len(names):
        raise ValueError(f"group names {names} collide as file names; rename the env's roles")
    inputs, dropped = {}, {}
    for g, name in enumerate(names):
        shared = agent_groups.count(g) > 1
        dropped[name] = identity if shared else []
        inputs[name] = [d for d in range(obs_dim) if d not in set(dropped[name])]
    return {"obs_shape": [obs_dim], "identity_dims": identity, "groups": names, "agent_groups": agent_groups,
            "inputs": inputs, "dropped": dropped}


def group_members(spec):
    """{group name: [agents]} of an encoder spec (groups without agents are left out)."""
    members = {}
    for agent, g in enumerate(spec["agent_groups"]):
        members.setdefault(spec["groups"][g], []).append(agent)
    return members
