"""Return and advantage estimators, vectorised over the batch and correct for truncated episodes.

Shapes: rewards, terminated, mask: [B, T-1, k]; values: [B, T, k] (one more step: the state
reached after the last transition). `mask[:, t]` marks real transitions. After the last real
transition of an episode the estimate bootstraps fully from `values` unless the episode
terminated, so time-limit ends (stored as non-terminal) are handled without special cases.
"""
import torch as th


def _valid_next(mask):
    # 1 where the following transition is also real, i.e. the recursion may continue
    return th.cat([mask[:, 1:], th.zeros_like(mask[:, :1])], dim=1)


def build_td_lambda_targets(rewards, terminated, mask, target_qs, gamma, td_lambda):
    """λ-returns G_t = r_t + γ(1-d_t)[(1-λ) Q_{t+1} + λ G_{t+1}], bootstrapping from Q at episode ends."""
    if td_lambda == 0:
        return rewards + gamma * (1 - terminated) * target_qs[:, 1:]
    cont = _valid_next(mask)
    ret = th.zeros_like(rewards)
    g_next = target_qs[:, -1]
    for t in range(rewards.shape[1] - 1, -1, -1):
        q_next = target_qs[:, t + 1]
        g_next = rewards[:, t] + gamma * (1 - terminated[:, t]) * (q_next + td_lambda * cont[:, t] * (g_next - q_next))
        ret[:, t] = g_next
    return ret


def build_gae_targets(rewards, terminated, mask, values, gamma, gae_lambda):
    """Generalised advantage estimation. Returns (advantages, returns) of shape [B, T-1, k]."""
    cont = _valid_next(mask)
    deltas = rewards + gamma * (1 - terminated) * values[:, 1:] - values[:, :-1]
    advantages = th.zeros_like(rewards)
    adv_next = th.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        adv_next = deltas[:, t] + gamma * gae_lambda * (1 - terminated[:, t]) * cont[:, t] * adv_next
        advantages[:, t] = adv_next
    advantages = advantages * mask
    return advantages, advantages + values[:, :-1]

