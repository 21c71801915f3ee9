"""A dataset written by the code before the offline/ package split (tests/data/dataset_v1.h5, made by
tests/data/make_dataset_v1.py at commit d50349e) loads with the current reader, values intact."""
import importlib.util
import json
import os

import numpy as np
import pytest

from offline import SCHEMA_VERSION, OfflineDataset, load_salvage

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
PATH = os.path.join(DATA, "dataset_v1.h5")


def maker():
    spec = importlib.util.spec_from_file_location("make_dataset_v1", os.path.join(DATA, "make_dataset_v1.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lazy", [False, True])
def test_a_dataset_written_before_the_split_loads(lazy):
    made = maker()
    ds = OfflineDataset.load(PATH, lazy=lazy, expect_env=("countdown", {"episode_limit": 4}))
    try:
        assert len(ds) == 3 and ds.attrs["schema_version"] == SCHEMA_VERSION == 1 and ds.attrs["complete"]
        assert ds.env_info == made.ENV_INFO and ds.attrs["note"] == "fixture"
        assert json.loads(ds.attrs["env_args"]) == {"episode_limit": 4, "seed": 1}
        assert json.loads(ds.attrs["config"]) == {"env": "countdown", "seed": 1}
        assert (ds.attrs["n_transitions"], ds.attrs["n_terminated"], ds.attrs["n_truncated"]) == (9, 2, 1)
        arr, want = ds.arrays(), made.arrays()
        for k, v in want.items():
            np.testing.assert_array_equal(arr[k], v, err_msg=k)
        truncated = np.zeros((3, 5, 1), dtype=np.uint8)
        truncated[1, 3] = 1  # the time-limit end, derived by the writer
        np.testing.assert_array_equal(arr["truncated"], truncated)
        np.testing.assert_array_equal(ds.returns, [3.0, 20.0, 18.0])
        assert ds.qualities.tolist() == made.QUALITIES and ds.quality_codes["novice"] == 5
        assert ds.label_names == ["pair", "score"]
        for k, v in made.LABELS.items():
            np.testing.assert_array_equal(arr["labels/" + k], v)
        batch = ds.episode_batch([2, 0])
        assert batch["actions_onehot"].shape == (2, 5, 2, 3)
        np.testing.assert_array_equal(batch["state"].numpy(), want["state"][[2, 0]])
    finally:
        ds.close()


def test_it_round_trips_through_the_new_writer(tmp_path):
    old = OfflineDataset.load(PATH)
    old.save(tmp_path / "copy.h5")
    new = OfflineDataset.load(tmp_path / "copy.h5")
    a, b = old.arrays(), new.arrays()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert new.quality_codes == old.quality_codes
    salvaged, unreadable, invalid = load_salvage(PATH)
    assert len(salvaged) == 3 and not unreadable.any() and not invalid.any()
