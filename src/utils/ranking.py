"""Choosing the top K episodes by a score: one rule (ties go to the lower index) for O-MAPL's own top-K flags
(learners.episode_ranking) and for offline_expert=top:<label>:<K> (offline.sampling), so both pick the same D_E."""
import numpy as np


def top_k(scores, k):
    """Indices of the k highest scores, highest first; ties go to the lower index (a stable sort of -score)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
