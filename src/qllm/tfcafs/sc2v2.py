# Hand-written reference TFCAF (not LLM output) for sc2v2: live units by health+shield, enemy in range, weapon ready.
# igm_gate: true
#
# State layout (SMACv2's get_state as documented in envs/smac.py state_schema) for the default task
# 10gen_protoss (capability_config without stochastic attack/health, conic_fov off, state_last_action on):
# per ally (health, weapon cooldown / max cooldown, x, y, shield / max shield, unit type one-hot over
# (stalker, zealot, colossus)); per enemy (health, x, y, shield, unit type one-hot, same order); then each
# agent's last action one-hot over 6 + n_enemies actions. So S = 8 n + 7 e + n (6 + e), e = (S - 14 n) / (7 + n)
# (5 vs 5: 130). Dead units are all 0. x, y are relative to the map centre in playable widths of the 32x32
# map; shooting ranges (use_unit_ranges) stalker 6, zealot 2 (min_attack_range), colossus 7 map units.
# Effective health = (hit points + shields) / (max hit points + max shields), by type (stalker 80 + 80,
# zealot 100 + 50, colossus 200 + 150).
# Score of a live agent: 0.4 + 0.6 effective health + 0.6 if an enemy is within its range (+0.3 more if
# its weapon is ready) + 0.3 if it attacked last step; dead agents get 0.05.
# Weights = n x score / sum(score) (mean 1), bias 0.
import torch

MAX_HEALTH = (80.0, 100.0, 200.0)     # stalker, zealot, colossus
MAX_SHIELD = (80.0, 50.0, 150.0)
SHOOT_RANGE = (6.0 / 32.0, 2.0 / 32.0, 7.0 / 32.0)


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    n_enemies = (state.shape[1] - 14 * n) // (7 + n)
    if n_enemies < 1 or 8 * n + 7 * n_enemies + n * (6 + n_enemies) != state.shape[1]:
        raise ValueError("sc2v2 reference TFCAF: the state does not follow the SMACv2 protoss layout "
                         "(8 per ally, 7 per enemy, last actions); it was written for 10gen_protoss")
    s = state.clamp(-1e4, 1e4)
    allies = s[:, : 8 * n].reshape(batch, n, 8)
    enemies = s[:, 8 * n: 8 * n + 7 * n_enemies].reshape(batch, n_enemies, 7)
    last_action = s[:, 8 * n + 7 * n_enemies:].reshape(batch, n, 6 + n_enemies)

    unit_type = allies[:, :, 5:8].clamp(0.0, 1.0)
    max_health = sum(MAX_HEALTH[k] * unit_type[:, :, k] for k in range(3))
    max_shield = sum(MAX_SHIELD[k] * unit_type[:, :, k] for k in range(3))
    health = allies[:, :, 0].clamp(0.0, 1.0)
    shield = allies[:, :, 4].clamp(0.0, 1.0)
    effective = ((health * max_health + shield * max_shield) / (max_health + max_shield).clamp(min=1.0)).clamp(0, 1)
    alive = (health > 0.0).to(state.dtype)
    ready = (allies[:, :, 1] <= 0.01).to(state.dtype)
    shoot_range = sum(SHOOT_RANGE[k] * unit_type[:, :, k] for k in range(3))
    enemy_alive = (enemies[:, :, 0] > 0.0).to(state.dtype)

    gap = allies[:, :, None, 2:4] - enemies[:, None, :, 1:3]
    dist = torch.sqrt((gap * gap).sum(-1) + 1e-12) + 1e4 * (1.0 - enemy_alive[:, None, :])   # [B, n, e]
    in_range = (dist.min(dim=2).values <= shoot_range + 0.5 / 32.0).to(state.dtype)
    attacked = last_action[:, :, 6:].sum(-1).clamp(0.0, 1.0)

    score = 0.4 + 0.6 * effective + in_range * (0.6 + 0.3 * ready) + 0.3 * attacked
    score = alive * score + (1.0 - alive) * 0.05

    weights = n * score / score.sum(dim=1, keepdim=True)
    bias = state.new_zeros((batch, 1))
    return weights, bias
