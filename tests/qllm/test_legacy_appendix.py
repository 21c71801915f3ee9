"""Legacy `QLLMNetwork(agents_q, global_state)` functions from the QLLM paper's appendix (paper 004, LLM responses
for pz-mpe-simple-spread, LBF 8x8-2p-2f-coop and academy_counterattack_easy, transcribed with the PDF's line
breaks repaired; the climbing response is not valid Python as printed and is left out) convert to the weight form in
the sandboxed worker and give the same Q_tot as the function itself, within 1e-5."""
import numpy as np
import pytest
import torch

from qllm.runtime import exec_restricted
from qllm.validate import ValidationContext, validate_source
from qllm.worker import TFCAFWorker

MPE_SPREAD = '''import torch
def QLLMNetwork(agents_q: torch.Tensor, global_state: torch.Tensor) -> torch.Tensor:
    batchsize = agents_q.size(0)
    n_agents = 6
    global_state_reshaped = global_state.view(batchsize, n_agents, 36)
    landmarks_relative = global_state_reshaped[:, :, 4:16].view(batchsize, n_agents, 6, 2)
    landmark_distances = torch.norm(landmarks_relative, dim=-1)
    min_dist_per_agent = torch.clamp(torch.min(landmark_distances, dim=-1)[0], min=0.1)
    pos_weights = 1.0 / min_dist_per_agent
    positions = global_state_reshaped[:, :, 2:4]
    diffs = positions.unsqueeze(2) - positions.unsqueeze(1)
    pairwise_dist = torch.norm(diffs, dim=-1)
    collision_mask = (pairwise_dist <= 0.3) & torch.eye(n_agents, device=positions.device).bool().unsqueeze(0)
    collision_weights = collision_mask.sum(dim=-1).float()
    combined_weights = pos_weights - collision_weights
    softmax_weights = torch.softmax(combined_weights, dim=-1)
    global_q = (agents_q * softmax_weights).sum(dim=-1, keepdim=True)
    return global_q
'''

LBF = '''import torch
def QLLMNetwork(agents_q: torch.Tensor, global_state: torch.Tensor) -> torch.Tensor:
    batch_size = agents_q.size(0)
    agents_data = global_state[:, :6].view(batch_size, 2, 3)
    food_data = global_state[:, 6:12].view(batch_size, 2, 3)
    agents_level = agents_data[:, :, 2]
    agents_pos = agents_data[:, :, :2].unsqueeze(2)
    food_pos = food_data[:, :, :2].unsqueeze(1)
    dxdy = torch.abs(agents_pos - food_pos).sum(dim=-1)
    adjacent = (dxdy == 1).float()
    active_food_mask = ((food_data[:, :, 0] != -1) & (food_data[:, :, 1] != -1)).unsqueeze(1)
    adjacent = adjacent * active_food_mask
    total_contribution = torch.zeros_like(agents_level)
    for j in range(2):
        adjacent_j = adjacent[:, :, j]
        food_level_j = food_data[:, j, 2]
        sum_adj_levels = (agents_level * adjacent_j).sum(dim=1)
        num_adj = adjacent_j.sum(dim=1)
        valid = ((num_adj >= 2) & (sum_adj_levels >= food_level_j)).float().unsqueeze(1)
        contribution_j = adjacent_j * food_level_j.unsqueeze(1) * valid
        total_contribution += contribution_j
    agent_contrib = agents_level * total_contribution
    weights = torch.softmax(agent_contrib, dim=1)
    global_q = (agents_q * weights).sum(dim=1, keepdim=True)
    return global_q
'''

FOOTBALL = '''import torch
import torch.nn.functional as F
def QLLMNetwork(agents_q: torch.Tensor, global_state: torch.Tensor) -> torch.Tensor:
    batch_size = agents_q.size(0)
    n_agents = agents_q.size(1)
    ball_pos = global_state[:, 88:90]
    holder_info = global_state[:, 94:97]
    is_my_team = holder_info[:, 1].bool()
    goal_pos = torch.tensor([1.0, 0.0], device=agents_q.device)
    ball_goal_dist = torch.norm(ball_pos - goal_pos, dim=1)
    valid_advance = is_my_team & (ball_goal_dist > 0.19) & (ball_goal_dist < 0.99)
    all_dists = []
    for i in range(n_agents):
        agent_obs = global_state[:, i*115:(i+1)*115]
        agent_id = torch.argmax(agent_obs[:, 97:108], dim=1)
        pos_x = agent_obs[torch.arange(batch_size), 2*agent_id]
        pos_y = agent_obs[torch.arange(batch_size), 2*agent_id+1]
        dist = torch.norm(torch.stack([pos_x-ball_pos[:,0], pos_y-ball_pos[:,1]], dim=1), dim=1)
        all_dists.append(dist.unsqueeze(1))
    dist_matrix = torch.cat(all_dists, dim=1)
    holder_mask = F.one_hot(torch.argmax(dist_matrix, dim=1), num_classes=n_agents).bool()
    goal_dists = []
    for i in range(n_agents):
        agent_obs = global_state[:, i*115:(i+1)*115]
        agent_id = torch.argmax(agent_obs[:, 97:108], dim=1)
        pos_x = agent_obs[torch.arange(batch_size), 2*agent_id]
        pos_y = agent_obs[torch.arange(batch_size), 2*agent_id+1]
        dist = torch.norm(torch.stack([pos_x-goal_pos[0], pos_y-goal_pos[1]], dim=1), dim=1)
        goal_dists.append(dist.unsqueeze(1))
    goal_dist_matrix = torch.cat(goal_dists, dim=1)
    advance_component = holder_mask.float() * valid_advance.unsqueeze(1) * 5.0
    position_component = 1.0 / (goal_dist_matrix + 1e-6)
    combined = torch.where(valid_advance.unsqueeze(1), advance_component, position_component)
    weights = F.softmax(combined, dim=1)
    global_q = (agents_q * weights).sum(dim=1, keepdim=True)
    return global_q
'''


def lbf_states(rng, n):
    """Grid positions, levels and food as the listing reads them (agents then food, (row, col, level))."""
    agents = np.concatenate([rng.integers(0, 8, (n, 2, 2)), rng.integers(1, 3, (n, 2, 1))], axis=2)
    food = np.concatenate([rng.integers(-1, 8, (n, 2, 2)), rng.integers(0, 4, (n, 2, 1))], axis=2)
    last = rng.integers(0, 6, (n, 2))
    return np.concatenate([agents.reshape(n, 6), food.reshape(n, 6), last], axis=1).astype(np.float32)


CASES = {  # name: (source, n_agents, states)
    "mpe_spread": (MPE_SPREAD, 6, lambda rng, n: rng.normal(size=(n, 216)).astype(np.float32)),
    "lbf": (LBF, 2, lbf_states),
    "football": (FOOTBALL, 4, lambda rng, n: rng.uniform(-1, 1, size=(n, 460)).astype(np.float32)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_appendix_function_converts_and_gives_the_same_q_tot(name):
    source, n, make = CASES[name]
    rng = np.random.default_rng(0)
    states = make(rng, 257)
    report = validate_source(source, ValidationContext(n_agents=n, state_size=states.shape[1], states=states,
                                                       igm_gate=True))
    assert report.ok and report.checks["form"] == "legacy" and report.checks["linear"]["ok"], report.feedback()
    worker = TFCAFWorker(source, form="legacy", n_agents=n, sha256="appendix", igm_gate=True)
    try:
        w, b = worker.evaluate(states)
    finally:
        worker.close()
    fn, form = exec_restricted(source)  # the paper's function itself, as the ground truth (test process only)
    q = torch.as_tensor(rng.normal(scale=3.0, size=(len(states), n)).astype(np.float32))
    direct = fn(q, torch.as_tensor(states))
    converted = (torch.as_tensor(w) * q).sum(-1, keepdim=True) + torch.as_tensor(b)
    assert torch.allclose(converted, direct, atol=1e-5, rtol=0), float((converted - direct).abs().max())
    assert (w >= 0).all() and np.allclose(w.sum(1), 1.0, atol=1e-5)  # softmax credit, no bias
