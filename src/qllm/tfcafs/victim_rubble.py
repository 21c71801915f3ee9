# Hand-written reference TFCAF (not LLM output) for victim_rubble: each agent's progress toward its role's next task.
# igm_gate: true
#
# State layout (envs/gridworld.py state_schema, Victim-Rubble): agent 0 (green, heals) (x, y) [0:2] and facing
# one-hot (up, down, left, right) [2:6]; agent 1 (orange, removes rubble) (x, y) [6:8] and facing [8:12];
# victim 1 (x, y) [12:14], healed [14]; victim 2 [15:17], [17]; rubble 1 (x, y) [18:20], present [20];
# rubble 2 [21:23], [23]; rubble 3 [24:26], [26]; time fraction [27]. Up is y + 1. In this map (envs/
# gridworld.py layout) victim 1 is free, victim 2 sits behind rubbles 1 and 2, rubble 3 blocks nothing.
# Green's task: victim 1 while unhealed, else victim 2 (worth half while rubble 1 or 2 still blocks it).
# Orange's task: the nearest of rubbles 1 and 2 while one is present, else rubble 3. Both act from an
# adjacent cell facing the object. Score = value x 1 / (1 + steps / 4) toward the task + 0.5 x value while
# facing it from next to it; no task left: 0. Weights = 2 x softmax(2 x score) (mean 1), bias 0.
import torch


def steps_to_interact(pos, target):
    return ((pos - target).abs().sum(-1) - 1.0).clamp(min=0.0)


def faces(pos, facing, target):
    ahead = pos + torch.stack([facing[:, 3] - facing[:, 2], facing[:, 0] - facing[:, 1]], dim=-1)
    return ((ahead - target).abs().sum(-1) < 0.5).to(pos.dtype)


def progress(pos, facing, target):
    return 1.0 / (1.0 + steps_to_interact(pos, target) / 4.0) + 0.5 * faces(pos, facing, target)


def tfcaf(state, n_agents):
    batch = state.shape[0]
    s = state.clamp(-1e3, 1e3)
    green, green_facing = s[:, 0:2], s[:, 2:6]
    orange, orange_facing = s[:, 6:8], s[:, 8:12]
    victim_1, victim_2 = s[:, 12:14], s[:, 15:17]
    open_1, open_2 = (s[:, 14] < 1.0).to(s.dtype), (s[:, 17] < 1.0).to(s.dtype)   # healed fraction < 1
    rubble_1, rubble_2, rubble_3 = s[:, 18:20], s[:, 21:23], s[:, 24:26]
    present_1, present_2, present_3 = [(s[:, k] > 0.5).to(s.dtype) for k in (20, 23, 26)]

    blocked = torch.maximum(present_1, present_2)
    green_score = (open_1 * progress(green, green_facing, victim_1)
                   + (1.0 - open_1) * open_2 * (1.0 - 0.5 * blocked) * progress(green, green_facing, victim_2))

    to_1 = steps_to_interact(orange, rubble_1) + 1e3 * (1.0 - present_1)
    to_2 = steps_to_interact(orange, rubble_2) + 1e3 * (1.0 - present_2)
    first = (to_1 <= to_2).to(s.dtype)
    blocking_score = (first * progress(orange, orange_facing, rubble_1)
                      + (1.0 - first) * progress(orange, orange_facing, rubble_2))
    orange_score = blocked * blocking_score + (1.0 - blocked) * present_3 * progress(orange, orange_facing, rubble_3)

    weights = n_agents * torch.softmax(2.0 * torch.stack([green_score, orange_score], dim=1), dim=1)
    bias = state.new_zeros((batch, 1))
    return weights, bias
