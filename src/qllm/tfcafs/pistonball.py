# Hand-written reference TFCAF (not LLM output) for pistonball: credit to the pistons under and just right of the ball.
# igm_gate: true
#
# State layout (envs/pistonball.py state_schema): ball x as a fraction of the arena width (piston i spans
# [i / n, (i + 1) / n]), ball height, ball vx, vy, spin, then one height per piston (leftmost first).
# The ball (radius = one piston width) rolls left when the pistons under its right half rise, so the credit
# peaks a quarter piston width right of the ball's centre and falls off over about one piston width.
# Weights = 0.2 + 0.8 x n x softmax(closeness) (mean 1, every piston keeps some credit), bias 0.
import torch


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    ball_x = state[:, 0:1].clamp(-10.0, 10.0)                                    # [B, 1]
    centres = (torch.arange(n, dtype=state.dtype, device=state.device) + 0.5) / n  # [n]
    offset = (centres[None, :] - ball_x) * n - 0.25       # piston centre right of the ball, in piston widths
    closeness = -(offset * offset) / (2.0 * 0.8 * 0.8)

    weights = 0.2 + 0.8 * n * torch.softmax(closeness, dim=1)
    bias = state.new_zeros((batch, 1))
    return weights, bias
