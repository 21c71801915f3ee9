# Hand-written reference TFCAF (not LLM output) for sc2: live marines by health, enemy in range, weapon ready.
# igm_gate: true
#
# State layout (SMAC's get_state as documented in envs/smac.py state_schema) for the default map 3m and every
# other marines-only map (3m, 8m, 25m, 5m_vs_6m, 10m_vs_11m, 27m_vs_30m: no shields, no unit type bits), with
# state_last_action on: per ally (health, weapon cooldown / max cooldown, x, y) with x, y relative to the map
# centre in playable widths; per enemy (health, x, y); then each agent's last action one-hot over
# 6 + n_enemies actions (6 + j = attack enemy j). So S = 4 n + 3 e + n (6 + e), e = (S - 10 n) / (3 + n).
# Dead units are all 0. Positions are normalised by the 32-unit playable size of these maps, so the
# marines' shooting range of 6 is 6 / 32.
# Score of a live agent: 0.4 + 0.6 health + 0.6 if an enemy is in range (+0.3 more if its weapon is ready)
# + 0.3 if it attacked last step; dead agents get 0.05. Weights = n x score / sum(score) (mean 1), bias 0.
import torch

SHOOT_RANGE = 6.0 / 32.0


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    n_enemies = (state.shape[1] - 10 * n) // (3 + n)
    if n_enemies < 1 or 4 * n + 3 * n_enemies + n * (6 + n_enemies) != state.shape[1]:
        raise ValueError("sc2 reference TFCAF: the state does not follow the marines-only SMAC layout "
                         "(4 per ally, 3 per enemy, last actions); it was written for map 3m")
    s = state.clamp(-1e4, 1e4)
    allies = s[:, : 4 * n].reshape(batch, n, 4)
    enemies = s[:, 4 * n: 4 * n + 3 * n_enemies].reshape(batch, n_enemies, 3)
    last_action = s[:, 4 * n + 3 * n_enemies:].reshape(batch, n, 6 + n_enemies)

    health = allies[:, :, 0].clamp(0.0, 1.0)
    alive = (health > 0.0).to(state.dtype)
    ready = (allies[:, :, 1] <= 0.01).to(state.dtype)
    enemy_alive = (enemies[:, :, 0] > 0.0).to(state.dtype)

    gap = allies[:, :, None, 2:4] - enemies[:, None, :, 1:3]
    dist = torch.sqrt((gap * gap).sum(-1) + 1e-12) + 1e4 * (1.0 - enemy_alive[:, None, :])   # [B, n, e]
    in_range = (dist.min(dim=2).values <= SHOOT_RANGE).to(state.dtype)
    attacked = last_action[:, :, 6:].sum(-1).clamp(0.0, 1.0)

    score = 0.4 + 0.6 * health + in_range * (0.6 + 0.3 * ready) + 0.3 * attacked
    score = alive * score + (1.0 - alive) * 0.05

    weights = n * score / score.sum(dim=1, keepdim=True)
    bias = state.new_zeros((batch, 1))
    return weights, bias
