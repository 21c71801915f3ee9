# Hand-written reference TFCAF (not LLM output) for gfootball: ball carrier by goal proximity, support, pressing.
# igm_gate: true
#
# State layout (envs/gfootball.py state_schema): the agents' simple115v2 observations concatenated, 115 values
# per agent. Within agent k's block: our 11 player positions (x, y) at [0:22], the ball (x, y, z) at [88:91],
# ball owner one-hot (nobody, us, them) at [94:97], the player agent k controls (one-hot over our 11 slots,
# all 0 if none) at [97:108]. The opponents' goal is at (1, 0).
# Scores: while we have the ball, the agent whose player is closest to it (the carrier) gets 2 + 1.5 x
# (1 - ball-to-goal distance / 2), the others 1 / (1 + 2 x their distance to goal) (open for a pass or a
# shot); otherwise every agent gets 1 / (1 + 3 x its distance to the ball) (win it back). An agent that
# controls no player scores -3. Weights = n x softmax(score) (mean 1), bias 0.
import torch

BLOCK = 115


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    s = state.reshape(batch, n, BLOCK).clamp(-1e3, 1e3)
    players = s[:, 0, 0:22].reshape(batch, 11, 2)        # our team, the same in every agent's block
    ball = s[:, 0, 88:90]                                # [B, 2]
    we_have_ball = (s[:, 0, 95] > 0.5).to(state.dtype)   # ball owner one-hot: (nobody, us, them)
    active = s[:, :, 97:108]                             # [B, n, 11]
    controls = (active.sum(-1) > 0.5).to(state.dtype)    # [B, n]

    position = (active[:, :, :, None] * players[:, None, :, :]).sum(2)   # [B, n, 2] the agent's player
    to_ball = torch.sqrt(((position - ball[:, None, :]) ** 2).sum(-1) + 1e-12)     # [B, n]
    to_goal = torch.sqrt((position[:, :, 0] - 1.0) ** 2 + position[:, :, 1] ** 2 + 1e-12)   # goal at (1, 0)
    ball_to_goal = torch.sqrt((ball[:, 0] - 1.0) ** 2 + ball[:, 1] ** 2 + 1e-12)             # [B]

    ranked = to_ball + 1e3 * (1.0 - controls)
    carrier = (ranked <= ranked.min(dim=1, keepdim=True).values + 1e-6).to(state.dtype) * controls
    carrier_score = 2.0 + 1.5 * (1.0 - ball_to_goal[:, None] / 2.0).clamp(0.0, 1.0)
    support_score = 1.0 / (1.0 + 2.0 * to_goal)
    attack = carrier * carrier_score + (1.0 - carrier) * support_score
    defend = 1.0 / (1.0 + 3.0 * to_ball)
    score = we_have_ball[:, None] * attack + (1.0 - we_have_ball[:, None]) * defend
    score = controls * score - 3.0 * (1.0 - controls)

    weights = n * torch.softmax(score, dim=1)
    bias = state.new_zeros((batch, 1))
    return weights, bias
