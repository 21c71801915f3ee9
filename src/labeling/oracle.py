"""Labelers `oracle` and `noisy_oracle`: the task's ground-truth rule, exact or with synthetic noise (the papers'
rule-based labels and their noisy-label ablations).

noisy_oracle gives the right answer with probability `oracle_accuracy`, else one of the task's wrong answers:
  noise_mode=bernoulli  each item independently: right when u(item) < oracle_accuracy, where u is a uniform number
                        hashed from (noise_seed, item id); so an item gets the same answer whatever the order or the
                        other items, and a set of N items is right about oracle_accuracy * N times
  noise_mode=exact      exactly round(oracle_accuracy * N) items right among the N whose true answer is not a tie
                        (those with the smallest u), and likewise among the tie items: the accuracy is exact
Which wrong answer (a tie has two) is also hashed from the item. The same seed gives the same labels.
A task with K queries per item (LabelTask.queries) gets K copies [N, K]: the oracle repeats its answer; the noisy
oracle draws each copy on its own (salted by the copy index), so `exact` makes every copy exactly that accurate
(LCA's "K copies, each with a fixed fraction flipped") and `bernoulli` flips each answer independently.
"""
import hashlib

import numpy as np

from labeling.base import Labeler, LabelResult, answer_counts

NOISE_MODES = ("bernoulli", "exact")


def item_uniform(seed, item_id, salt):
    """A uniform number in [0, 1) from (seed, item id, salt): stable across runs, orders and platforms."""
    digest = hashlib.blake2b(f"{seed}\x00{item_id}\x00{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0 ** 64


class OracleLabeler(Labeler):
    """The ground truth of the task (oracle_key chooses it for trajectory preferences)."""
    name = "oracle"

    def settings(self):
        return {"labeler": self.name, "oracle_key": self.args.oracle_key}

    def label(self, task, items, source, bar=None):
        answers = np.asarray(task.oracle_batch(items, source, self.args), dtype=np.float64)
        queries = task.queries(self.args)
        if queries is not None:  # K answers per item: the rule gives the same one K times
            answers = np.repeat(answers[:, None], int(queries), axis=1)
        if bar is not None:
            bar.update(len(items))
        return LabelResult(answers, {**self.settings(), **answer_counts(answers)})


class NoisyOracleLabeler(OracleLabeler):
    name = "noisy_oracle"

    def __init__(self, args):
        super().__init__(args)
        if not 0.0 <= float(args.oracle_accuracy) <= 1.0:
            raise ValueError(f"oracle_accuracy must be in [0, 1], got {args.oracle_accuracy}")
        if args.noise_mode not in NOISE_MODES:
            raise ValueError(f"unknown noise_mode '{args.noise_mode}'; choose one of {list(NOISE_MODES)}")

    def settings(self):
        return {"labeler": self.name, "oracle_key": self.args.oracle_key,
                "oracle_accuracy": float(self.args.oracle_accuracy), "noise_mode": self.args.noise_mode,
                "noise_seed": int(self.args.noise_seed)}

    def label(self, task, items, source, bar=None):
        correct = np.asarray(task.oracle_batch(items, source, self.args), dtype=np.float64)
        queries = task.queries(self.args)
        if queries is None:
            answers = self._copy(task, items, correct, "")
        else:  # K copies, each noisy on its own (copy 0 draws as a one-answer task does)
            answers = np.stack([self._copy(task, items, correct, f":{k}" if k else "") for k in range(int(queries))],
                               axis=1)
            correct = correct[:, None]
        if bar is not None:
            bar.update(len(items))
        nontie = np.broadcast_to(correct != 0.5, answers.shape)
        info = {**self.settings(), **answer_counts(answers),
                "oracle_agreement": float((answers == correct).mean()) if len(items) else None,
                "oracle_agreement_nontie": float((answers == correct)[nontie].mean()) if nontie.any() else None}
        return LabelResult(answers, info)

    def _copy(self, task, items, correct, salt):
        """One noisy answer per item [N]: right with probability oracle_accuracy (bernoulli) or exactly
        round(oracle_accuracy * N) right (exact); `salt` makes the K copies of a K-query task independent."""
        seed, acc = int(self.args.noise_seed), float(self.args.oracle_accuracy)
        u = np.array([item_uniform(seed, it.id, "right" + salt) for it in items])
        if self.args.noise_mode == "bernoulli":
            right = u < acc
        else:
            right = np.zeros(len(items), dtype=bool)
            for group in (correct != 0.5, correct == 0.5):
                rows = np.flatnonzero(group)
                order = sorted(rows, key=lambda r: (u[r], items[r].id))
                right[order[:int(round(acc * len(rows)))]] = True
        answers = correct.copy()
        for r in np.flatnonzero(~right):
            wrong = task.wrong_answers(items[r], float(correct[r]))
            answers[r] = wrong[int(item_uniform(seed, items[r].id, "wrong" + salt) * len(wrong))]
        return answers

