# Hand-written reference TFCAF (not LLM output) for penalty: credit to the agent that best-responded last step.
# igm_gate: false
#
# State layout (envs/matrix_game.py state_schema): agent 0's previous action one-hot [0:3], agent 1's [3:6];
# all zeros at the first step. PAYOFF[action of agent 0][action of agent 1] of the penalty game with the
# config's penalty -100 (optima 10 at (0, 2) and (2, 0)).
# Credit of agent i = how good its previous action was against its teammate's previous action, on the
# payoff matrix: (payoff it got - worst reply) / (best reply - worst reply), in [0, 1]. Weights = 0.5 +
# that (1 each at the first step), bias 0.
# The task is non-monotonic, but these weights are non-negative on purpose: they depend on the state only,
# so a negative w_i would merely make agent i's greedy action the one with the lowest team contribution.
import torch

PAYOFF = ((-100.0, 0.0, 10.0),
          (0.0, 2.0, 0.0),
          (10.0, 0.0, -100.0))


def tfcaf(state, n_agents):
    batch = state.shape[0]
    last_0 = state[:, 0:3].clamp(0.0, 1.0)
    last_1 = state[:, 3:6].clamp(0.0, 1.0)
    started = (last_0.sum(1) > 0.5).to(state.dtype) * (last_1.sum(1) > 0.5).to(state.dtype)

    # [B, 3]: payoff of each action of agent 0 against agent 1's previous action, and the other way round
    replies_0 = torch.stack([sum(PAYOFF[a][b] * last_1[:, b] for b in range(3)) for a in range(3)], dim=1)
    replies_1 = torch.stack([sum(PAYOFF[a][b] * last_0[:, a] for a in range(3)) for b in range(3)], dim=1)
    credit = []
    for replies, own in ((replies_0, last_0), (replies_1, last_1)):
        got = (replies * own).sum(1)
        worst, best = replies.min(dim=1).values, replies.max(dim=1).values
        credit.append(((got - worst) / (best - worst).clamp(min=1e-3)).clamp(0.0, 1.0))
    quality = torch.stack(credit, dim=1)        # [B, 2]

    weights = started[:, None] * (0.5 + quality) + (1.0 - started[:, None])
    bias = state.new_zeros((batch, 1))
    return weights, bias
