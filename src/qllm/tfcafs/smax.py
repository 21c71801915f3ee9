# Hand-written reference TFCAF (not LLM output) for smax: alive units by health, enemy in range and weapon ready.
# igm_gate: true
#
# State layout (envs/smax.py state_schema): 10 values per unit, allies (the agents) first, then enemies:
# health fraction (0 = dead, and then the whole block is 0), position (x, y) in map units, weapon cooldown
# (<= 0 = ready), unit type one-hot over (marine, marauder, stalker, zealot, zergling, hydralisk); then the
# units' teams and type ids (1 value per unit each). So S = 12 (n + n_enemies) and n_enemies = S / 12 - n.
# Score of a live agent: 0.4 + 0.6 health + 0.6 if an enemy is within its attack range (+0.3 more if its
# weapon is ready) + 0.3 x (1 - health of its nearest enemy) (finishing blows); dead agents get 0.05.
# Weights = n x score / sum(score) (mean 1), bias 0.
import torch

ATTACK_RANGE = (5.0, 6.0, 6.0, 2.0, 2.0, 5.0)   # marine, marauder, stalker, zealot, zergling, hydralisk


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    n_units = state.shape[1] // 12
    units = state[:, : 10 * n_units].reshape(batch, n_units, 10).clamp(-1e4, 1e4)
    allies, enemies = units[:, :n], units[:, n:]

    health = allies[:, :, 0].clamp(0.0, 1.0)
    alive = (health > 0.0).to(state.dtype)
    enemy_health = enemies[:, :, 0].clamp(0.0, 1.0)
    enemy_alive = (enemy_health > 0.0).to(state.dtype)
    ready = (allies[:, :, 3] <= 0.0).to(state.dtype)
    attack_range = sum(ATTACK_RANGE[k] * allies[:, :, 4 + k] for k in range(6))    # [B, n] by unit type

    gap = allies[:, :, None, 1:3] - enemies[:, None, :, 1:3]
    dist = torch.sqrt((gap * gap).sum(-1) + 1e-12) + 1e4 * (1.0 - enemy_alive[:, None, :])   # [B, n, e]
    nearest = dist.min(dim=2).values
    target = (dist <= nearest[:, :, None] + 1e-6).to(state.dtype) * enemy_alive[:, None, :]
    target_health = (target * enemy_health[:, None, :]).sum(-1) / target.sum(-1).clamp(min=1.0)
    in_range = (nearest <= attack_range + 0.5).to(state.dtype)

    score = 0.4 + 0.6 * health + in_range * (0.6 + 0.3 * ready) + 0.3 * (1.0 - target_health) * in_range
    score = alive * score + (1.0 - alive) * 0.05

    weights = n * score / score.sum(dim=1, keepdim=True)
    bias = state.new_zeros((batch, 1))
    return weights, bias
