# Hand-written reference TFCAF (not LLM output) for two_switch: progress of each agent toward its switch, then home.
# igm_gate: true
#
# State layout (envs/gridworld.py state_schema, Two-Switch): agent 0 (x, y) [0:2] and facing one-hot
# (up, down, left, right) [2:6]; agent 1 (x, y) [6:8] and facing [8:12]; switch 1 (x, y) [12:14] and
# triggered [14]; switch 2 (x, y) [15:17] and triggered [17]; door (x, y) [18:20] and open [20]; home (x, y)
# [21:23]; time fraction [23]. Up is y + 1. Home lies in the lower room, below the door (y < door y).
# Sub-goals: while both switches are untriggered they are split so that the longer of the two trips is
# shortest; with one left, the closer agent takes it and the other heads home; then both head home. A switch
# is triggered from an adjacent cell facing it, home by stepping on it; trips from the upper room to home go
# through the door. Score = 1 / (1 + steps / 4) toward the agent's sub-goal, + 0.5 while it stands next to
# its switch facing it. Weights = 2 x softmax(2 x score) (mean 1), bias 0.
import torch


def steps_to_interact(pos, target):
    return ((pos - target).abs().sum(-1) - 1.0).clamp(min=0.0)


def faces(pos, facing, target):
    ahead = pos + torch.stack([facing[:, 3] - facing[:, 2], facing[:, 0] - facing[:, 1]], dim=-1)
    return ((ahead - target).abs().sum(-1) < 0.5).to(pos.dtype)


def steps_home(pos, door, home):
    upper = (pos[:, 1] > door[:, 1]).to(pos.dtype)
    via_door = (pos - door).abs().sum(-1) + (door - home).abs().sum(-1)
    return upper * via_door + (1.0 - upper) * (pos - home).abs().sum(-1)


def tfcaf(state, n_agents):
    batch = state.shape[0]
    s = state.clamp(-1e3, 1e3)
    pos, facing = [s[:, 0:2], s[:, 6:8]], [s[:, 2:6], s[:, 8:12]]
    switch = [s[:, 12:14], s[:, 15:17]]
    todo_1, todo_2 = (s[:, 14] < 0.5).to(s.dtype), (s[:, 17] < 0.5).to(s.dtype)
    door, home = s[:, 18:20], s[:, 21:23]

    d = [[steps_to_interact(pos[i], switch[k]) for k in range(2)] for i in range(2)]   # d[agent][switch]
    both = todo_1 * todo_2
    only_1 = todo_1 * (1.0 - todo_2)
    only_2 = todo_2 * (1.0 - todo_1)
    none = 1.0 - both - only_1 - only_2
    # both left: agent 0 -> switch 1 and agent 1 -> switch 2 ("straight"), or crossed
    straight = (torch.maximum(d[0][0], d[1][1]) <= torch.maximum(d[0][1], d[1][0])).to(s.dtype)
    # one left: the closer agent takes it
    last = [only_1 * d[i][0] + only_2 * d[i][1] for i in range(2)]
    zero_takes_last = (last[0] <= last[1]).to(s.dtype)

    scores = []
    for i in range(2):
        takes_last = zero_takes_last if i == 0 else 1.0 - zero_takes_last
        mine_1 = both * (straight if i == 0 else 1.0 - straight) + only_1 * takes_last
        mine_2 = both * (1.0 - straight if i == 0 else straight) + only_2 * takes_last
        heads_home = none + (only_1 + only_2) * (1.0 - takes_last)
        steps = mine_1 * d[i][0] + mine_2 * d[i][1] + heads_home * steps_home(pos[i], door, home)
        ready = mine_1 * faces(pos[i], facing[i], switch[0]) + mine_2 * faces(pos[i], facing[i], switch[1])
        scores.append(1.0 / (1.0 + steps / 4.0) + 0.5 * ready)

    weights = n_agents * torch.softmax(2.0 * torch.stack(scores, dim=1), dim=1)
    bias = state.new_zeros((batch, 1))
    return weights, bias
