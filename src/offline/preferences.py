"""Trajectory-preference pairs for offline learners that train on them (O-MAPL, MARL-SL): `preference_set=<name>`.

The pairs and labels are stored in the dataset file by the labeling layer (offline/label_store.py: the layout and the
content fingerprint that ties a set to its episodes). Here they are checked against the dataset they index and drawn
as pair batches. Pair indices refer to the episodes of the dataset *as stored*: a view that renumbers episodes (a
merge, a top fraction, a split) would silently pair other episodes, so run: offline refuses those combinations
(`check_stored_view`).

Labels: 1 = the first episode preferred, 0 = the second, 0.5 = a tie, NaN = unlabeled (skipped, never guessed).
"""
from dataclasses import dataclass

import numpy as np
import torch as th

from offline.format import DatasetError
from offline.label_store import label_command, read_preferences


@dataclass
class PairBatch:
    """`episodes`: one EpisodeBatch of 2P episodes, the first episode of every pair in rows [0, P), the second in
    [P, 2P), all cut to the longest (so both halves are padded to the same length); `label` [P] float tensor.
    One batch for both halves: one forward pass of every network per update."""

    episodes: object
    label: th.Tensor

    @property
    def n_pairs(self):
        return len(self.label)

    @property
    def first(self):
        return self.episodes[: self.n_pairs]

    @property
    def second(self):
        return self.episodes[self.n_pairs:]


MOSTLY_TIES = 0.9  # the share of ties in a set's labeled pairs from which a run warns (PreferencePairs.mostly_ties)


class PreferencePairs:
    """The labeled pairs of one preference set, checked against the dataset: indices in range and distinct within a
    pair, labels in {0, 0.5, 1} or NaN; unlabeled pairs are dropped here, with counts kept for the run's info.
    Refuses a set with no labeled pair, or with more than `max_unlabeled_fraction` unlabeled."""

    def __init__(self, name, pairs, label, dataset, max_unlabeled_fraction, attrs=None):
        pairs, label = np.asarray(pairs), np.asarray(label, dtype=np.float64)
        self.name, self.dataset, self.attrs = name, dataset, dict(attrs or {})
        # (oracle_key, [E] scores): the score the set's labels are judged by, set by run: offline (which may read the
        # labeling layer); a labeling learner's top-K ceiling ranks by it. None = the true return.
        self.ceiling = None
        E = len(dataset)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or label.shape != (len(pairs),):
            raise DatasetError(f"preference set '{name}': pairs must be [P, 2] and label [P], got {pairs.shape} and "
                               f"{label.shape}")
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= E):
            raise DatasetError(f"preference set '{name}': episode indices in [{pairs.min()}, {pairs.max()}], but the "
                               f"dataset has {E} episodes: it was labeled on another dataset")
        unlabeled = np.isnan(label)
        bad = ~unlabeled & ~np.isin(label, (0.0, 0.5, 1.0))
        if bad.any():
            raise DatasetError(f"preference set '{name}': {int(bad.sum())} labels outside {{0, 0.5, 1, NaN}} "
                               f"(first: pair {int(np.flatnonzero(bad)[0])} = {label[bad][0]})")
        same = pairs[:, 0] == pairs[:, 1]
        if same.any():
            raise DatasetError(f"preference set '{name}': {int(same.sum())} pairs compare an episode with itself")
        n, n_unlabeled = len(label), int(unlabeled.sum())
        self.counts = {"pairs": n, "labeled": n - n_unlabeled, "unlabeled": n_unlabeled,
                       "ties": int((label == 0.5).sum()), "first_preferred": int((label == 1).sum()),
                       "second_preferred": int((label == 0).sum())}
        if n == 0 or n_unlabeled == n:
            raise DatasetError(f"preference set '{name}': all {n} pairs are unlabeled (nothing to learn from). Rerun "
                               f"the labeling that made it (a rerun asks only the missing items), or replace it: "
                               f"{label_command(getattr(dataset, 'path', None) or '<path>', name)} "
                               f"label_overwrite=True")
        if n_unlabeled / n > max_unlabeled_fraction:
            raise DatasetError(f"preference set '{name}': {n_unlabeled} of {n} pairs ({n_unlabeled / n:.1%}) are "
                               f"unlabeled, above max_unlabeled_fraction={max_unlabeled_fraction}; relabel (a rerun "
                               f"of the labeling asks only the missing items) or raise max_unlabeled_fraction")
        self.pairs, self.label = pairs[~unlabeled].astype(np.int64), label[~unlabeled].astype(np.float32)

    @property
    def settings(self):
        """The labeling run's settings as the label run mode records them (labeler, oracle_key, ...); {} for sets
        written without them."""
        settings = self.attrs.get("settings")
        return settings if isinstance(settings, dict) else {}

    def incomplete(self):
        """A warning when the set's labeling run stopped before it was complete (a budget, a replay miss, failed
        requests: its attrs say complete=False), else ''. Training goes on with the labeled pairs."""
        if bool(self.attrs.get("complete", True)):
            return ""
        labeler = self.settings.get("labeler", self.attrs.get("labeler"))
        path = getattr(self.dataset, "path", None) or "<path>"
        return (f"preference set '{self.name}' comes from a labeling run that stopped before it was complete: "
                f"training on its {self.counts['labeled']} labeled pairs ({self.counts['unlabeled']} unlabeled). To "
                f"finish it, rerun the labeling with its other settings as they were (it asks only the missing "
                f"items): {label_command(path, self.name, labeler or 'oracle')}")

    def mostly_ties(self):
        """A warning when at least MOSTLY_TIES of the labeled pairs are ties, else '': only the others order the
        episodes, so a ranking learned from the set rests on few pairs (all ties is refused by load_preferences)."""
        c = self.counts
        if c["ties"] < MOSTLY_TIES * c["labeled"]:
            return ""
        ordering = c["labeled"] - c["ties"]
        return (f"preference set '{self.name}': {c['ties']} of its {c['labeled']} labeled pairs are ties "
                f"({c['ties'] / c['labeled']:.0%}); only {ordering} order the episodes, so a ranking learned from it "
                f"(O-MAPL's top K, MARL-SL's reward) rests on those. Label more pairs (n_pairs) or pairs whose "
                f"episodes differ under the labeler's score (another oracle_key)")

    def __len__(self):
        return len(self.pairs)

    def batch(self, rows, device="cpu"):
        """The PairBatch of the given labeled pairs (indices into this set)."""
        rows = np.asarray(rows, dtype=np.int64)
        episodes = self.dataset.episode_batch(np.concatenate([self.pairs[rows, 0], self.pairs[rows, 1]]))
        episodes = episodes[:, : episodes.max_t_filled()]
        label = th.from_numpy(self.label[rows])
        if device != "cpu":
            episodes, label = episodes.to(device), label.to(device)
        return PairBatch(episodes, label)

    def sample(self, n_pairs, rng, device="cpu"):
        """`n_pairs` labeled pairs drawn without replacement (with, if the set is smaller) by the generator `rng`."""
        rows = np.sort(rng.choice(len(self), size=n_pairs, replace=n_pairs > len(self)))
        return self.batch(rows, device)


def load_preferences(data, name, max_unlabeled_fraction):
    """The labeled pairs of set `name` of dataset `data` (loaded from one file, whole): a missing set names the sets
    present and the labeling command; a set made for other episodes (content fingerprint) is refused."""
    pairs, label, attrs = read_preferences(data, name)
    prefs = PreferencePairs(name, pairs, label, data, max_unlabeled_fraction, attrs)
    c = prefs.counts
    if c["ties"] == c["labeled"]:  # every target 0.5: equal scores minimise the loss, so any ranking is arbitrary
        raise DatasetError(f"preference set '{name}': all {c['labeled']} labeled pairs are ties (label 0.5; "
                           f"{c['first_preferred']} first preferred, {c['second_preferred']} second preferred): a "
                           f"preference learner gets no order of the episodes from it, and its top K would be the tie "
                           f"rule's choice. Label pairs whose episodes differ under the labeler's score (another "
                           f"oracle_key, a dataset with varied episodes, more n_pairs), or use another set")
    return prefs


def check_stored_view(what, n_datasets, top_fraction, valid_fraction, reward_label):
    """Pair indices and per-episode labels refer to the one dataset file as stored: refuse the views that renumber
    its episodes or change their content. `what`: who needs the file as stored (named in the error)."""
    problems = []
    if n_datasets != 1:
        problems.append(f"{n_datasets} datasets are merged (one file is indexed)")
    if top_fraction < 1.0:
        problems.append(f"offline_top_fraction={top_fraction} keeps a renumbered subset")
    if valid_fraction > 0:
        problems.append(f"offline_valid_fraction={valid_fraction} splits the episodes")
    if reward_label:
        problems.append(f"offline_reward={reward_label} changes the episodes' content (their fingerprint)")
    if problems:
        raise ValueError(f"{what} indexes the episodes of the dataset file as stored, but {'; '.join(problems)}: "
                         f"train on the single, whole dataset file (the one the pairs were labeled on)")
