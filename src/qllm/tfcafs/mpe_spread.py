# Hand-written reference TFCAF (not LLM output) for mpe_spread: closeness to a free landmark, minus collisions.
# igm_gate: true
#
# State layout (envs/mpe.py state_schema, scenario spread with N agents = N landmarks): one block of 6 N
# values per agent: velocity (2), position (2), landmark l minus own position (2 N), other agents minus own
# position (2 (N - 1)), silent communication (2 (N - 1)). The block size follows from S / n_agents, so the
# function works for any N (3, 6, 15, 25).
# A landmark is "taken" for agent i when another agent is closer to it and within 0.25 of it; agent i's
# score is 2 / (1 + 2 d) with d its distance to the nearest landmark not taken by another agent, minus 0.5 per
# agent touching it (centre distance < 0.3). Weights = n x softmax(score) (mean 1), bias 0.
import torch


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    block = state.shape[1] // n
    s = state.reshape(batch, n, block).clamp(-1e4, 1e4)
    landmarks = s[:, :, 4: 4 + 2 * n].reshape(batch, n, n, 2)                 # [B, agent, landmark, xy]
    others = s[:, :, 4 + 2 * n: 4 + 2 * n + 2 * (n - 1)].reshape(batch, n, n - 1, 2)

    dist = torch.sqrt((landmarks * landmarks).sum(-1) + 1e-12)                # [B, i, l]
    # distance from landmark l to the closest agent other than i
    eye = torch.eye(n, dtype=state.dtype, device=state.device)
    dist_other = (dist[:, None, :, :] + 1e6 * eye[None, :, :, None]).min(dim=2).values   # [B, i, l]
    taken = (dist_other < dist) & (dist_other < 0.25)
    free_dist = torch.where(taken, torch.full_like(dist, 1e6), dist).min(dim=2).values
    nearest = torch.where(free_dist < 1e5, free_dist, dist.min(dim=2).values)   # all taken: nearest landmark
    closeness = 2.0 / (1.0 + 2.0 * nearest)

    touching = (torch.sqrt((others * others).sum(-1) + 1e-12) < 0.3).to(state.dtype).sum(-1)   # [B, n]
    score = closeness - 0.5 * touching

    weights = n * torch.softmax(score, dim=1)
    bias = state.new_zeros((batch, 1))
    return weights, bias
