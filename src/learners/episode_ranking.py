"""Ranking a dataset's episodes by a recovered score and judging the top K against the ground truth (MisoDICE
phase 1, B.2.3): plain numpy, shared by the learners that label datasets (O-MAPL, MARL-SL)."""
import logging
import os

import numpy as np

from learners.common import NonFiniteError
from utils.config import ConfigError
from utils.ranking import boundary_ties, constant_scores, top_k


class RecoveredReturnError(NonFiniteError):
    """Recovered returns or rewards that are NaN/inf: nothing is written; the loop names the last good checkpoint."""

    def __str__(self):
        bad = ", ".join(f"{k} = {v}" for k, v in self.stats.items())
        msg = (f"{self.learner}: non-finite recovered returns ({bad}) at {self.step_name} {self.step}; no labels "
               f"were written")
        return msg + (f". {self.checkpoint}" if self.checkpoint else "")


def spearman(a, b):
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x):
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]  # tied values share their mean rank


def precision_recall(selected, truth):
    """(precision, recall) of the selected episode indices against the boolean ground-truth flags `truth` [E]
    (None, None without ground truth)."""
    if truth is None or not truth.any():
        return None, None
    hits = int(truth[np.asarray(selected)].sum())
    return hits / max(len(selected), 1), hits / int(truth.sum())


def ground_truth_expert(data, quality="expert"):
    """[E] bool: episodes whose agents all have ground-truth quality `quality`; None when the dataset has none."""
    if quality not in data.quality_codes:
        return None
    return (data.quality_code_array == data.quality_codes[quality]).all(axis=1)


def check_topk(k, episodes):
    """topk_expert against the dataset (its range >= 1 is checked with the config): O-MAPL and MARL-SL alike."""
    if k <= 0 or k > episodes:
        raise ConfigError(f"topk_expert={k} must be in [1, {episodes}] (the dataset has {episodes} episodes)")
    if k == episodes:
        logging.getLogger("pymarl").warning(f"topk_expert={k} = every episode of the dataset: D_E will equal D_U")


def constant_reason(scores, what):
    """Why a ranking by `scores` is undefined (they are constant, utils.ranking.constant_scores), or None."""
    if not constant_scores(scores):
        return None
    s = np.asarray(scores, dtype=np.float64)
    return (f"the {what} are constant (all {len(s)} within {float(s.max() - s.min()):.3g} of "
            f"{float(s.mean()):.6g}): the top K would be the tie rule's choice, not the model's")


def spearman_reason(scores, returns):
    """Why Spearman of `scores` with the true returns is undefined (either side constant), or None."""
    if np.ptp(np.asarray(scores, dtype=np.float64)) == 0:
        return "undefined: the recovered scores are constant"
    if np.ptp(np.asarray(returns, dtype=np.float64)) == 0:
        return "undefined: every episode has the same true return"
    return None


def ranking_report(scores, data, k, ceiling=None, what="recovered returns"):
    """How well ranking by `scores` ({rank_by: [E]}) finds the dataset's expert episodes, beside the ceiling of
    ranking by the labeler's own oracle score (`ceiling` = (oracle_key, [E] scores), as run: offline passes for the
    preference set trained on; None = the true return): precision/recall of the top k, Spearman with the true
    return. A ranking of constant scores has no precision (None, with the reason in `undefined`); Spearman is None
    (with `spearman_note`) when either side is constant; `boundary_ties` = (tied, chosen) at the k-th score."""
    truth, returns = ground_truth_expert(data), np.asarray(data.returns, dtype=np.float64)
    key, oracle = ceiling if ceiling is not None else ("return", returns)
    ceiling_p, ceiling_r = precision_recall(top_k(np.asarray(oracle, dtype=np.float64), k), truth)
    if constant_scores(oracle):
        ceiling_p = ceiling_r = None
    report = {"topk_expert": int(k), "episodes": len(returns), "true_experts": None if truth is None else
              int(truth.sum()), "ceiling": {"precision": ceiling_p, "recall": ceiling_r, "oracle_key": key}}
    for name, s in scores.items():
        undefined = constant_reason(s, what)
        p, r = (None, None) if undefined else precision_recall(top_k(s, k), truth)
        note = spearman_reason(s, returns)
        report[name] = {"precision": p, "recall": r, "spearman_true_return": None if note else spearman(s, returns),
                        "precision_of_ceiling": None if p is None or not ceiling_p else p / ceiling_p,
                        "undefined": undefined, "spearman_note": note,
                        "boundary_ties": list(boundary_ties(s, k))}
    return report


def describe(entry, k):
    """The console words for one ranking of ranking_report: precision/recall (or why there is none), the ties at the
    top-K boundary, and Spearman with the true return (or why it is undefined)."""
    if entry["undefined"]:
        pr = f"top-{k} precision undefined ({entry['undefined']})"
    elif entry["precision"] is None:
        pr = "n/a (no ground truth)"
    else:
        pr = f"precision {entry['precision']:.3f} recall {entry['recall']:.3f}"
    tied, chosen = entry["boundary_ties"]
    if not entry["undefined"] and tied > chosen:
        pr += f" ({chosen} of the top {k} drawn by the tie rule among {tied} episodes of equal score)"
    sp = entry["spearman_note"] or f"{entry['spearman_true_return']:.3f}"
    return f"{pr}, Spearman with the true return {sp}"


def own_labels(data, names, model_dir):
    """The labels among `names` that the dataset holds and that were written by the run saving checkpoints into
    `model_dir` (a resumed run replaces its own labels; see run/offline.write_labels, which records model_dir)."""
    return [n for n in names if n in data.label_names
            and data.label_attrs(n).get("model_dir") == os.path.abspath(model_dir)]


def check_new_labels(data, names, overwrite, model_dir):
    """Before training: labels this run would write that the dataset already holds are an error (the run would
    fail at its end) unless `label_overwrite`, or unless this run wrote them itself (resumed into its model
    folder `model_dir`, e.g. after finishing or being killed after writing them)."""
    for name in names:
        if name in data.damaged_labels and not overwrite:
            data.label(name)  # the error naming the damage and the edit that removes it (the run would fail at its end)
    own = own_labels(data, names, model_dir)
    existing = [n for n in names if n in data.label_names and n not in own]
    if existing and not overwrite:
        raise ValueError(f"the dataset already has label(s) {existing} written by another run; set "
                         f"label_overwrite=True to replace them, or write under another name (omapl_label_name / "
                         f"marl_sl_label_name)")
