# Hand-written reference TFCAF (not LLM output) for mpe_tag: predators by proximity and closing speed to the prey.
# igm_gate: true
#
# State layout (envs/mpe.py state_schema, scenarios tag/world): one block per predator: velocity (2),
# position (2), obstacle k minus own position (2 per obstacle), the other predators then the prey minus own
# position (2 each), the prey's velocities (2 each). With N_OBSTACLES fixed (the configs' num_obstacles),
# the number of prey follows from the block size S / n_agents = 4 + 2 obstacles + 2 (n - 1) + 4 prey.
# Score of a predator: proximity to its nearest prey, +1 while touching a prey (centre distance < 0.125,
# what the +10 reward pays for), +0.3 x its closing speed on that prey (clamped to [-1, 1]).
# Weights = n x softmax(2 x score) (mean 1), bias 0.
import torch

N_OBSTACLES = 2


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    block = state.shape[1] // n
    n_prey = max((block - 4 - 2 * N_OBSTACLES - 2 * (n - 1)) // 4, 1)
    s = state.reshape(batch, n, block).clamp(-1e4, 1e4)
    velocity = s[:, :, 0:2]                                                       # [B, n, 2]
    start = 4 + 2 * N_OBSTACLES + 2 * (n - 1)
    prey = s[:, :, start: start + 2 * n_prey].reshape(batch, n, n_prey, 2)        # prey minus own position
    prey_velocity = s[:, :, start + 2 * n_prey: start + 4 * n_prey].reshape(batch, n, n_prey, 2)

    dist = torch.sqrt((prey * prey).sum(-1) + 1e-12)                              # [B, n, prey]
    nearest = dist.min(dim=2).values
    proximity = torch.exp(-nearest / 0.5)
    touching = (dist < 0.125).to(state.dtype).max(dim=2).values

    # closing speed on the nearest prey: -d|r|/dt with r = prey - predator
    target = (dist <= nearest[:, :, None] + 1e-9).to(state.dtype)
    target = target / target.sum(-1, keepdim=True).clamp(min=1.0)
    rel_velocity = prey_velocity - velocity[:, :, None, :]
    closing = -((rel_velocity * prey).sum(-1) / dist)                            # [B, n, prey]
    approach = (target * closing).sum(-1).clamp(-1.0, 1.0)

    score = proximity + touching + 0.3 * approach
    weights = n * torch.softmax(2.0 * score, dim=1)
    bias = state.new_zeros((batch, 1))
    return weights, bias
