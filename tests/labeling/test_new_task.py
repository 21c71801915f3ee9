"""A second task registered from outside the core (as CODI and LCA will add theirs): 'long_episode', one item per
episode, answered by the oracle labelers and stored as a per-episode label, through the same run mode."""
import logging

import numpy as np
from tests.labeling.datasets import write_dataset

import labeling
from labeling import LABELERS, Item, LabelTask
from labeling.store import write_episode_labels
from offline import OfflineDataset
from run.label import run_label
from utils.config import build_config


class LongEpisode(LabelTask):
    """Is the episode at least as long as the dataset's median? (1 yes, 0 no)"""
    name = "long_episode"

    def make_items(self, source, args):
        return [Item(f"episode:{e:05d}", e) for e in range(len(source.dataset))]

    def lengths(self, source):
        return source.dataset.arrays()["filled"].reshape(len(source.dataset), -1).sum(1) - 1

    def oracle(self, item, source, args):
        L = self.lengths(source)
        return float(L[item.data] >= np.median(L))

    def wrong_answers(self, item, correct):
        return [1.0 - correct]

    def accuracy(self, items, answers, source, args):
        truth = self.oracle_batch(items, source, args)
        return {"agreement": float((answers == truth).mean())}

    def stored(self, source, args):
        ds = OfflineDataset.load(source.path, lazy=True)
        try:
            return {"settings": None} if args.label_name in ds.label_names else None
        finally:
            ds.close()

    def store(self, source, items, answers, attrs, args, overwrite=False):
        out = np.full(len(source.dataset), np.nan, dtype=np.float32)
        out[[it.data for it in items]] = answers
        return write_episode_labels(source.path, {args.label_name: out}, attrs, source.fingerprint,
                                    overwrite=overwrite)


def test_a_new_task_needs_no_core_change(tmp_path, monkeypatch):
    monkeypatch.setitem(labeling.TASKS, "long_episode", LongEpisode)
    path = write_dataset(tmp_path / "d.h5", E=30)
    config = build_config("label_preferences", "climbing", {
        "offline_dataset": path, "label_task": "long_episode", "label_name": "long", "labeler": "noisy_oracle",
        "oracle_accuracy": 0.8, "noise_mode": "exact", "local_results_path": str(tmp_path / "r")})
    info = run_label(None, config, logging.getLogger("t"))
    assert info["task"] == "long_episode" and info["accuracy"]["agreement"] == 24 / 30
    ds = OfflineDataset.load(path)
    lengths = ds.arrays()["filled"].reshape(30, -1).sum(1) - 1
    got = ds.arrays()["labels/long"]
    assert ((got == (lengths >= np.median(lengths))).sum()) == 24
    assert ds.preference_sets == []
    # the plain oracle answers it too, in the library
    task = LongEpisode()
    src = labeling.LabelSource(ds, path, "fp")
    items = task.make_items(src, None)
    res = LABELERS["oracle"](config_ns(config)).label(task, items, src)
    np.testing.assert_array_equal(res.answers, lengths >= np.median(lengths))
    assert res.info["labeled"] == 30


def config_ns(config):
    from types import SimpleNamespace
    return SimpleNamespace(**config)
