# Hand-written reference TFCAF (not LLM output) for lbf_2s_8x8_2p_2f_coop: credit to agents near food they can load.
# igm_gate: true
#
# State layout (LBF "qllm" state, envs/lbf.py state_schema): n_agents x (row, column, level), then
# n_food x (row, column, level) with (-1, -1, 0) once a food is collected, then n_agents last actions
# (-1 at the first step, 5 = load). n_food follows from the state size: S = 3 n + 3 n_food + n.
# Score of agent i = max over uncollected food j of proximity(i, j) x (0.5 + 0.5 x level share) x food
# value, plus a bonus for loading next to a food; weights = n x softmax(3 x score) (mean 1), bias 0.
import torch


def tfcaf(state, n_agents):
    n = n_agents
    batch = state.shape[0]
    n_food = (state.shape[1] - 4 * n) // 3
    agents = state[:, : 3 * n].reshape(batch, n, 3)
    food = state[:, 3 * n: 3 * n + 3 * n_food].reshape(batch, n_food, 3)
    last_action = state[:, 3 * n + 3 * n_food: 4 * n + 3 * n_food]

    food_level = food[:, :, 2].clamp(min=0.0, max=1e4)              # [B, F]
    active = (food_level > 0.5).to(state.dtype)                     # collected food has level 0
    value = food_level * active / (food_level * active).max(dim=1, keepdim=True).values.clamp(min=1.0)

    # Manhattan distance agent -> food; loading needs an adjacent cell (distance 1)
    dist = ((agents[:, :, None, 0] - food[:, None, :, 0]).abs()
            + (agents[:, :, None, 1] - food[:, None, :, 1]).abs()).clamp(max=1e4)  # [B, n, F]
    steps = (dist - 1.0).clamp(min=0.0)
    proximity = 1.0 / (1.0 + steps / 3.0)
    adjacent = ((dist - 1.0).abs() < 0.5).to(state.dtype)

    # share of the food's level this agent can supply (1 = it can load it alone)
    level = agents[:, :, 2].clamp(min=0.0, max=1e4)
    share = (level[:, :, None] / food_level[:, None, :].clamp(min=1.0)).clamp(max=1.0)

    contribution = (proximity * (0.5 + 0.5 * share) * value[:, None, :]).max(dim=2).values   # [B, n] in [0, 1]
    loading = ((last_action - 5.0).abs() < 0.5).to(state.dtype)
    at_food = (adjacent * value[:, None, :]).max(dim=2).values
    score = contribution + 0.5 * loading * at_food                  # in [0, 1.5]

    weights = n * torch.softmax(3.0 * score, dim=1)
    bias = state.new_zeros((batch, 1))
    return weights, bias
