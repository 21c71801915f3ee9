"""State-value critics by name (`critic_type` in actor-critic configs). Each is `Critic(scheme, args)` with
`forward(batch) -> V [B, T, n, 1]` over all timesteps; `_ns` variants hold one network per agent."""
from modules.critics.ac import ACCritic, ACCriticNS
from modules.critics.centralv import CentralVCritic, CentralVCriticNS

REGISTRY = {
    "ac_critic": ACCritic,
    "ac_critic_ns": ACCriticNS,
    "cv_critic": CentralVCritic,
    "cv_critic_ns": CentralVCriticNS,
}
