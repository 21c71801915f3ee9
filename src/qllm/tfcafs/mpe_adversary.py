# Hand-written reference TFCAF (not LLM output) for mpe_adversary: the goal keeper by goal proximity, others as decoys.
# igm_gate: true
#
# State layout (envs/mpe.py state_schema, scenario adversary with N good agents = N landmarks): one block of
# 4 N + 2 values per good agent: goal minus own position (2), landmark l minus own position (2 N), then the
# adversary and the other good agents minus own position (2 N, adversary first). Block size = S / n_agents.
# Reward = adversary-to-goal distance - distance from the goal to the closest good agent. The good agent
# closest to the goal carries the second term: its score is its goal proximity, higher still while the
# adversary is near the goal. The other good agents deceive the adversary by covering a decoy landmark:
# their score is their proximity to the nearest non-goal landmark. Weights = n x softmax(2 x score), bias 0.
import torch


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    block = state.shape[1] // n
    s = state.reshape(batch, n, block).clamp(-1e4, 1e4)
    goal = s[:, :, 0:2]                                                  # [B, n, 2]
    landmarks = s[:, :, 2: 2 + 2 * n].reshape(batch, n, n, 2)           # [B, n, landmark, 2]
    adversary = s[:, :, 2 + 2 * n: 4 + 2 * n]                           # [B, n, 2]

    goal_dist = torch.sqrt((goal * goal).sum(-1) + 1e-12)               # [B, n]
    keeper = (goal_dist <= goal_dist.min(dim=1, keepdim=True).values + 1e-6).to(state.dtype)

    # which landmark is the goal: the one whose relative position equals goal_rel (seen from agent 0)
    gap = ((landmarks[:, 0] - goal[:, 0:1]) ** 2).sum(-1)                # [B, landmark]
    is_goal = (gap <= gap.min(dim=1, keepdim=True).values + 1e-9).to(state.dtype)
    landmark_dist = torch.sqrt((landmarks * landmarks).sum(-1) + 1e-12)  # [B, n, landmark]
    decoy_dist = (landmark_dist + 1e3 * is_goal[:, None, :]).min(dim=2).values.clamp(max=1e3)

    adversary_goal = torch.sqrt(((goal[:, 0] - adversary[:, 0]) ** 2).sum(-1) + 1e-12)   # [B]
    threat = torch.exp(-adversary_goal / 0.5)                            # 1 when the adversary is at the goal

    keeper_score = (1.0 + 0.5 * threat[:, None]) / (1.0 + 3.0 * goal_dist)
    decoy_score = 0.8 / (1.0 + 3.0 * decoy_dist)
    score = keeper * keeper_score + (1.0 - keeper) * decoy_score

    weights = n * torch.softmax(2.0 * score, dim=1)
    bias = state.new_zeros((batch, 1))
    return weights, bias
