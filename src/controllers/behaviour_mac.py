"""Behaviour controller for dataset collection: several loaded policies act side by side and each agent of
each episode follows the policy it is assigned (per-agent quality mixtures such as CODI's one-expert protocol).

    mac = BehaviourMAC({"expert": load_policy(cfg, "models/run/400", env_info)})
    mac.set_assignment([["expert", "random"]])      # [runner batch rows, n_agents] -> policy name
    batch = runner.run()                            # runners call init_hidden / select_actions as usual
"""
from types import SimpleNamespace as SN

import numpy as np
import torch as th

from components.episode_buffer import EpisodeBatch, episode_scheme
from controllers import REGISTRY as mac_REGISTRY
from utils.config import load_yaml

RANDOM = "random"
ENV_INFO_KEYS = ("n_agents", "n_actions", "state_shape", "obs_shape", "episode_limit")


def load_policy(run_config, checkpoint, env_info):
    """The BasicMAC/NonSharedMAC an online run acted with, rebuilt from its saved config (agent, inputs, output
    type, action selector) with the weights of one of its checkpoint folders. A key the saved config lacks (written
    before the key was in config/default.yaml) takes default.yaml's value."""
    args = SN(**{**load_yaml("", "default"), **run_config})
    for k in ENV_INFO_KEYS:
        setattr(args, k, env_info[k])
    args.device = "cpu"
    scheme, groups, preprocess = episode_scheme(env_info)
    # the scheme as the replay buffer extends it (actions_onehot), which sizes the agent's inputs
    scheme = EpisodeBatch(scheme, groups, 1, 1, preprocess=preprocess).scheme
    mac = mac_REGISTRY[args.mac](scheme, groups, args)
    mac.load_models(checkpoint)
    return mac


def uniform_actions(avail):
    """A uniformly random available action per agent: available actions score in [1, 2), others in [0, 1)."""
    return (th.rand(avail.shape) + (avail > 0).float()).argmax(dim=-1)


class BehaviourMAC:
    """Acts with named policies (BasicMACs) and the built-in "random" (uniform over available actions).

    Every policy advances its hidden state every step for every agent, so an agent's input history is the same
    whichever policy it follows. `greedy`: masked argmax of Q or of π; otherwise each policy samples with its own
    action selector in train mode at `policy_t_env[name]` (the step of its checkpoint, so an epsilon schedule is
    where training left it). `epsilon`: chance that an agent following a policy takes a uniform random action."""

    def __init__(self, policies, greedy=True, epsilon=0.0, policy_t_env=None):
        if RANDOM in policies:
            raise ValueError(f"'{RANDOM}' is the built-in uniform policy; name loaded policies otherwise")
        self.policies = dict(policies)
        self.greedy = greedy
        self.epsilon = float(epsilon)
        self.policy_t_env = dict(policy_t_env or {})
        self.action_selector = SN(epsilon=self.epsilon)  # runners log its epsilon
        self.assignment = None

    @property
    def names(self):
        return [RANDOM, *self.policies]

    def set_assignment(self, assignment):
        """Policy names [batch rows, n_agents] for the next episodes (rows = the runner's envs)."""
        a = np.asarray(assignment, dtype=str)
        if a.ndim != 2:
            raise ValueError(f"assignment must be [batch rows, n_agents], got shape {a.shape}")
        unknown = sorted(set(a.flat) - set(self.names))
        if unknown:
            raise ValueError(f"assignment names unknown policies {unknown}; loaded: {self.names}")
        self.assignment = a

    def init_hidden(self, batch_size):
        if self.assignment is None or len(self.assignment) != batch_size:
            got = None if self.assignment is None else len(self.assignment)
            raise ValueError(f"set_assignment with {batch_size} rows before an episode batch of {batch_size} "
                             f"(assignment rows: {got})")
        for mac in self.policies.values():
            mac.init_hidden(batch_size)

    @th.no_grad()
    def select_actions(self, ep_batch, t_ep, t_env, bs=slice(None), test_mode=False):
        rows = th.as_tensor(np.arange(ep_batch.batch_size)[bs], dtype=th.long)
        assign = self.assignment[rows.numpy()]
        avail = ep_batch["avail_actions"][:, t_ep][rows]
        actions = uniform_actions(avail)
        for name, mac in self.policies.items():
            out = mac.forward(ep_batch, t_ep, test_mode=test_mode)[rows]
            mine = th.from_numpy(assign == name)
            if mine.any():
                actions = th.where(mine, self._act(name, mac, out, avail), actions)
        return actions

    def _act(self, name, mac, out, avail):
        if self.greedy:
            chosen = out.masked_fill(avail == 0, -float("inf")).argmax(dim=-1)
        else:
            t_env = self.policy_t_env.get(name, 0)
            chosen = th.as_tensor(mac.action_selector.select_action(out, avail, t_env, test_mode=False))
        if self.epsilon > 0:
            explore = th.rand(chosen.shape) < self.epsilon
            chosen = th.where(explore, uniform_actions(avail), chosen)
        return chosen.long()
