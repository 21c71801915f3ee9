"""The critic factory.

- `make_critic(args, scheme)`: a state-value critic by name (`critic_type`, the actor-critic learners). Each is
  `Critic(scheme, args)` with `forward(batch) -> V [B, T, n, 1]` over all timesteps; `_ns` variants hold one network
  per agent.
- `make_agent_critic(args, input_shape, n_outputs)`: a per-agent Q or V network on the mac's inputs (the offline
  actor-critics), built from the agent REGISTRY (`critic_agent`), so it is the online stack's network.

Both are `critic_hidden_dim` wide (null = hidden_dim).
"""
import copy

from modules.agents import REGISTRY as agent_REGISTRY
from modules.critics.ac import ACCritic, ACCriticNS
from modules.critics.base import critic_hidden_dim
from modules.critics.centralv import CentralVCritic, CentralVCriticNS

REGISTRY = {
    "ac_critic": ACCritic,
    "ac_critic_ns": ACCriticNS,
    "cv_critic": CentralVCritic,
    "cv_critic_ns": CentralVCriticNS,
}


def make_critic(args, scheme):
    if args.critic_type not in REGISTRY:
        raise ValueError(f"unknown critic_type '{args.critic_type}'; valid: {sorted(REGISTRY)}")
    return REGISTRY[args.critic_type](scheme, args)


def make_agent_critic(args, input_shape, n_outputs):
    if args.critic_agent not in agent_REGISTRY:
        raise ValueError(f"unknown critic_agent '{args.critic_agent}'; valid: {sorted(agent_REGISTRY)}")
    net_args = copy.copy(args)
    net_args.hidden_dim = critic_hidden_dim(args)
    return agent_REGISTRY[args.critic_agent](input_shape, net_args, n_outputs)
