"""Choosing the top K episodes by a score: one rule for O-MAPL's own top-K flags (learners.episode_ranking) and for
offline_expert=top:<label>:<K> (offline.sampling), so both pick the same D_E.

Ties: episodes of equal score are ordered by a fixed pseudo-random permutation of the episode indices (TIE_SEED), not
by index. Datasets often store their expert episodes first, so ties going to the lower index would put experts in a
top K that the scores never chose (a constant score would look like a perfect ranking). The permutation is fixed (it
depends only on the number of episodes), so the two callers, and reruns, pick the same episodes. A ranking that is
nothing but ties (constant_scores) is refused by the learners that write labels from it."""
import numpy as np

TIE_SEED = 20240601  # the permutation that orders tied scores (any fixed value; changing it changes tied top-K sets)
# Scores whose spread (max - min) is at most this fraction of their magnitude (at least 1) count as constant: a few
# float32 rounding steps (eps ~ 1.2e-7), far below any difference a trained model makes between episodes.
CONSTANT_RTOL = 1e-5


def tie_order(n):
    """The fixed permutation of range(n) that orders tied scores (its position = the episode's tie rank)."""
    return np.random.default_rng(TIE_SEED).permutation(n)


def top_k(scores, k):
    """Indices of the k highest scores, highest first; ties are ordered by tie_order (module doc), not by index."""
    scores = np.asarray(scores, dtype=np.float64)
    order = tie_order(len(scores))
    return order[np.argsort(-scores[order], kind="stable")[:k]]


def constant_scores(scores):
    """True when the finite `scores` are all equal up to CONSTANT_RTOL: no ranking, only tie-breaking."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 2:
        return False
    spread = float(s.max() - s.min())
    return spread <= CONSTANT_RTOL * max(1.0, float(np.abs(s).max()))


def boundary_ties(scores, k):
    """(tied, chosen): how many episodes share the k-th highest score, and how many of them the top k holds (chosen by
    tie_order). tied > chosen means the top k is partly the tie rule's choice."""
    s = np.asarray(scores, dtype=np.float64)
    if not 0 < k < len(s):
        return 0, 0
    kth = np.sort(s)[::-1][k - 1]
    tied = int((s == kth).sum())
    return tied, int((s[top_k(s, k)] == kth).sum())
