"""CODI's inputs checked before use (tests/run/test_augment.py has the pipeline): given labels made for other
episodes or of another kind, labeler settings out of range, a horizon the labels cannot share, settings that differ
from augment_checkpoint's models, and episodes too short for a whole segment."""
import json
import logging
import os

import h5py
import numpy as np
import pytest
from tests.labeling.codi_datasets import LIMIT, write_one_expert_spread
from tests.run.test_augment import (  # noqa: F401 (fixtures)
    E,
    augment,
    codi_run,
    copy_of,
    labelled,
    main_fails,
    tiny_updates,
)

from helpers import run_main, sacred_dir
from offline import DatasetWriter, OfflineDataset
from offline.label_store import EpisodesChangedError, content_fingerprint, write_episode_labels
from utils.config import ConfigError, build_config


def test_labels_copied_from_another_dataset_are_refused(labelled, tmp_path):  # noqa: F811
    other, _ = write_one_expert_spread(tmp_path / "other.h5", E=E, N=3, seed=5)
    with h5py.File(labelled, "r") as f, h5py.File(other, "a") as g:
        f.copy(f["labels"], g, "labels")  # the labels and their attrs, as a copy by hand makes them
    with pytest.raises(EpisodesChangedError, match=r"labels/best_agent of .*other.h5 was made for other episodes: "
                                                   r"it records the dataset fingerprint .*label_overwrite=True"):
        augment(tmp_path, "codi", other, augment_stage="labeler")
    with h5py.File(other, "a") as g:  # labels that record no fingerprint (written by the collection's own writer)
        del g["labels/best_agent"].attrs["content_fingerprint"]
    augment(tmp_path, "codi", other, augment_stage="labeler")  # nothing to check them by: used


def labels_of_kind(src, name, values):
    write_episode_labels(src, {name: values}, {"task": "made_by_hand"}, content_fingerprint(src))


def test_labels_of_another_kind_are_named_with_the_labels_to_give(labelled, tmp_path, capfd):  # noqa: F811
    src = copy_of(labelled, tmp_path)
    good = OfflineDataset.load(src).arrays()["labels/best_agent"].astype(np.float32)
    cases = {"zfloat": (np.full((E, LIMIT + 1, 3), 1 / 3, np.float32),
                        r"holds a float32 array of shape \[30, 11, 3\] \(a labeler's output codi_z_\*\?\)"),
             "big": (np.where(good >= 0, 3, -1), r"agent indices 3 outside -1 and 0..2 \(this data has 3 agents\)"),
             "half": (np.where(good >= 0, good + 0.5, -1), r"values that are not whole agent indices \(0.5, 1.5")}
    for name, (values, _) in cases.items():
        labels_of_kind(src, name, values)
    for name, (_, match) in cases.items():
        with pytest.raises(ConfigError, match=rf"labels/{name} of .* {match}.*give augment_label_name one of the "
                                              r"segment labels it has \(best_agent\)"):
            augment(tmp_path, "codi", src, augment_label_name=name, augment_stage="labeler")
    main_fails(tmp_path / "cli", "codi", capfd, f"offline_dataset={src}", *tiny_updates(augment_label_name="zfloat"),
               match=r"labels/zfloat .* holds a float32 array")


def test_labeler_settings_out_of_range_are_refused_before_the_run():
    for key, value in (("labeler_max_epochs", 0), ("labeler_hidden", -1), ("labeler_lr", 0.0),
                       ("labeler_batch_size", 0), ("labeler_max_steps", 0)):
        with pytest.raises(ConfigError, match=rf"'{key}'.* must be .*; got {value!r}"):
            build_config("codi", "mpe_spread", {key: value})
    build_config("codi", "mpe_spread", {"labeler_max_epochs": 2, "labeler_lr": 1e-3})


def test_labeling_refuses_a_horizon_codi_cannot_use_and_codi_never_suggests_one(labelled, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match=r"'segment_horizon'.* must be an integer >= 2"):
        build_config("label_agent_quality", "mpe_spread", {"segment_horizon": 1})
    src = copy_of(labelled, tmp_path)  # labels of H = 1 made before the range said so
    attrs = {"task": "agent_quality", "settings": {"segment_horizon": 1}}
    write_episode_labels(src, {"h1": OfflineDataset.load(src).arrays()["labels/best_agent"]}, attrs,
                         content_fingerprint(src))
    with pytest.raises(ConfigError, match=r"judge segments of 1 steps, this run's segment_horizon is 4: label again") \
            as e:
        augment(tmp_path, "codi", src, augment_label_name="h1", augment_stage="labeler")
    assert "set segment_horizon" not in str(e.value)


def test_every_training_setting_that_differs_from_the_checkpoints_is_named(labelled, codi_run, tmp_path,  # noqa: F811
                                                                           caplog):
    folder = codi_run[2]["augment"]["artifacts"]
    with caplog.at_level(logging.WARNING):
        got = augment(tmp_path, "codi_no_comp", labelled, augment_checkpoint=folder, augment_train_steps=1000,
                      augment_batch_size=32, labeler_hidden=16, augment_out=str(tmp_path / "given.h5"))
    for said in ("augment_train_steps=40 (this run's 1000 is not used)",
                 "augment_batch_size=16 (this run's 32 is not used)", "labeler_hidden=8 (this run's 16 is not used)"):
        assert said in caplog.text
    assert got["models"]["steps"] == 40


def short_episodes(src, path, transitions=2):
    """`src`'s episodes cut to `transitions` transitions each (terminal there)."""
    ds = OfflineDataset.load(src)
    a = {k: v.copy() for k, v in ds.arrays().items() if k in ("obs", "state", "actions", "avail_actions", "reward",
                                                              "filled")}
    for k in a:
        a[k][:, transitions + 1:] = 0
    a["terminated"] = np.zeros_like(a["reward"], np.uint8)
    a["terminated"][:, transitions - 1] = 1
    with DatasetWriter(path, ds.env_info, "mpe", json.loads(ds.attrs["env_args"]), {"env": "mpe"}) as w:
        w.add_arrays(a, qualities=ds.qualities)
    return str(path)


def test_episodes_shorter_than_a_segment_are_warned_and_the_probe_records_no_nan(labelled, tmp_path):  # noqa: F811
    path = short_episodes(labelled, tmp_path / "short.h5")
    run_main(tmp_path / "results", "madiff_like", "mpe_spread", f"offline_dataset={path}",
             *tiny_updates(augment_stage="train"))
    run = sacred_dir(tmp_path / "results", "madiff_like", "spread_N3")
    info = json.load(open(os.path.join(run, "info.json")), parse_constant=lambda c: pytest.fail(f"{c} in info.json"))
    assert "probe_pass_rate" not in info and "real_pass_rate" in info
    cout = open(os.path.join(run, "cout.txt")).read()
    assert "no episode of" in cout and "has the 3 transitions of a segment of segment_horizon=4 (the longest has 2)" \
        in cout
    assert "no generated (probe) pass rate (no held-out episode has 4 transitions)" in cout


def test_nonfinite_samples_stop_with_advice_on_the_conditions_not_delta(codi_run, tmp_path):  # noqa: F811
    from augmenters.codi.stitching import GenerationError

    tmp, src, info = codi_run
    folder = info["augment"]["artifacts"]
    for i, change in enumerate(({"target_rtg": 1e30}, {"guidance_weights": 1e30})):
        with pytest.raises(GenerationError, match=r"were not finite .*target_rtg .*guidance_weights") as e:
            augment(tmp_path, "codi", src, augment_checkpoint=folder, delta="auto", max_attempts=8,
                    augment_out=str(tmp_path / f"none{i}.h5"), **change)
        assert "use delta=auto" not in str(e.value)
