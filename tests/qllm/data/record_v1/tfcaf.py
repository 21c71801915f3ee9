import torch


def tfcaf(state, n_agents):
    w = torch.softmax(state[:, :n_agents], dim=-1)
    return w, state[:, -1:]
