"""The HDF5 offline dataset: round trips from real rollouts, atomic writes, validation errors, views, batches."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch as th
from tests.helpers import make_ctx

from offline import (
    SCHEMA_VERSION,
    DatasetError,
    DatasetWriter,
    OfflineDataset,
)

FIELDS = ("obs", "state", "actions", "avail_actions", "reward", "terminated", "filled")


def collect(ctx, n):
    return [ctx.runner.run(test_mode=False) for _ in range(n)]


def write(path, ctx, batches, **add_kw):
    with DatasetWriter(path, ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args, vars(ctx.args)) as w:
        for b in batches:
            w.add(b, **add_kw)
    return path


@pytest.fixture(scope="module")
def climbing(tmp_path_factory):
    th.manual_seed(0)
    ctx = make_ctx("qmix", "climbing")
    batches = collect(ctx, 4)
    path = write(tmp_path_factory.mktemp("d") / "climbing.h5", ctx, batches, qualities=["expert", "random"])
    return ctx, batches, path


def test_round_trip_climbing(climbing):
    ctx, batches, path = climbing
    ds = OfflineDataset.load(path, expect_env=("matrix_game", {"game": "climbing"}))
    assert len(ds) == 4 and ds.attrs["schema_version"] == SCHEMA_VERSION and ds.attrs["complete"]
    arr = ds.arrays()
    for i, b in enumerate(batches):
        for k in FIELDS:
            np.testing.assert_array_equal(arr[k][i], b[k][0].numpy().astype(arr[k].dtype), err_msg=k)
    # climbing ends by time limit only: a truncation at the last transition, never a terminal
    T = ds.env_info["episode_limit"]
    assert arr["terminated"].sum() == 0
    assert (arr["truncated"][:, T - 1, 0] == 1).all() and arr["truncated"].sum() == 4
    assert (arr["filled"].sum((1, 2)) == T + 1).all()
    np.testing.assert_allclose(ds.returns, [b["reward"].sum().item() for b in batches], rtol=1e-6)
    assert (ds.qualities == np.array([["expert", "random"]] * 4)).all()
    assert json.loads(ds.attrs["env_args"])["game"] == "climbing"
    assert json.loads(ds.attrs["config"])["env"] == "matrix_game"


def test_lbf_truncated_vs_terminated(tmp_path):
    th.manual_seed(0)
    # the small map with epsilon=1 (t_env stays 0 in the anneal window): some episodes collect the food,
    # others hit the time limit
    ctx = make_ctx("qmix", "lbf", env_args={"time_limit": 15})
    done, truncated, batches = False, False, []
    for _ in range(300):
        b = ctx.runner.run(test_mode=False)
        term = bool(b["terminated"].any())
        if (term and not done) or (not term and not truncated):
            batches.append(b)
            done, truncated = done or term, truncated or not term
        if done and truncated:
            break
    assert done and truncated, "no LBF episode ended by collecting all food in 300 episodes"
    write(tmp_path / "lbf.h5", ctx, batches)
    ds = OfflineDataset.load(tmp_path / "lbf.h5", lazy=True)
    arr = ds.arrays()
    for i, b in enumerate(batches):
        for k in FIELDS:
            np.testing.assert_array_equal(arr[k][i], b[k][0].numpy().astype(arr[k].dtype), err_msg=k)
        L = int(b["filled"].sum()) - 1
        if b["terminated"].any():
            assert arr["terminated"][i, L - 1, 0] == 1 and arr["truncated"][i].sum() == 0
            # the last food can be collected on the time limit's step: a terminal all the same (not truncated)
            assert L <= ds.env_info["episode_limit"]
        else:
            assert arr["truncated"][i, L - 1, 0] == 1 and arr["truncated"][i].sum() == 1
            assert arr["terminated"][i].sum() == 0 and L == ds.env_info["episode_limit"]
    assert ds.attrs["n_terminated"] == 1 and ds.attrs["n_truncated"] == 1
    ds.close()


def test_interrupted_write_leaves_nothing(tmp_path, climbing):
    ctx, batches, _ = climbing
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(path, ctx.runner.get_env_info(), "matrix_game", {}, {}) as w:
            w.add(batches[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_file_is_cleaned_and_never_loaded(tmp_path, climbing):
    """A writer killed outright leaves a temp named after it: refused by readers, deleted by the next writer."""
    import subprocess
    import sys

    from utils.files import temp_path

    ctx, batches, _ = climbing
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temp_path(str(tmp_path / "x.h5")).replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    with DatasetWriter(tmp_path / "full.h5", ctx.runner.get_env_info(), "matrix_game", {}, {}) as w:
        w.add(batches[0])
    shutil.copy(tmp_path / "full.h5", stale)
    with pytest.raises(DatasetError, match="unfinished write"):
        OfflineDataset.load(stale)
    with DatasetWriter(tmp_path / "y.h5", ctx.runner.get_env_info(), "matrix_game", {}, {}) as w:
        w.add(batches[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.h5", "y.h5"]


def _copy(src, dst, edit):
    import shutil
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        edit(f)
    return dst


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.attrs.__setitem__("schema_version", 99), r"schema_version 99 is not supported \(supported: \[1\]\)"),
    (lambda f: f.__delitem__("truncated"), r"missing dataset key\(s\) \['truncated'\]"),
    (lambda f: f.attrs.__delitem__("complete"), "complete"),
    (lambda f: f.attrs.__setitem__("complete", False), "complete"),
    (lambda f: (f.__delitem__("reward"), f.create_dataset("reward", data=np.zeros((4, 26, 2)))),
     r"'reward' has shape \(4, 26, 2\), expected \(4, 26, 1\)"),
    (lambda f: f["episode_return"].resize((3,)), r"'episode_return' has shape \(3,\), expected \(4,\)"),
])
def test_bad_files_rejected(tmp_path, climbing, edit, message):
    path = _copy(climbing[2], tmp_path / "bad.h5", edit)
    with pytest.raises(DatasetError, match=message):
        OfflineDataset.load(path)


def test_env_mismatch(climbing):
    with pytest.raises(DatasetError, match="dataset env is 'matrix_game', expected 'lbf'"):
        OfflineDataset.load(climbing[2], expect_env=("lbf", {}))
    with pytest.raises(DatasetError, match=r"env_args\['game'\] is 'climbing', expected 'penalty'"):
        OfflineDataset.load(climbing[2], expect_env=("matrix_game", {"game": "penalty"}))


def test_corrupted_file(tmp_path, climbing):
    data = climbing[2].read_bytes()
    for n in (len(data) // 2, 100):
        bad = tmp_path / f"cut{n}.h5"
        bad.write_bytes(data[:n])
        with pytest.raises(DatasetError, match="truncated or corrupted"):
            OfflineDataset.load(bad)
    with pytest.raises(DatasetError, match="nope.h5 does not exist"):  # a user error (main: exit 2, no retry)
        OfflineDataset.load(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError):  # and still a missing file for code that asks
        OfflineDataset.load(tmp_path / "nope.h5")


def test_lazy_equals_memory_and_views(tmp_path, climbing):
    ctx, batches, path = climbing
    mem, lazy = OfflineDataset.load(path), OfflineDataset.load(path, lazy=True)
    assert lazy.lazy and not mem.lazy
    rows = [3, 0, 2]
    a, b = mem.arrays(rows), lazy.arrays(rows)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    top = mem.top_fraction(0.5)
    assert len(top) == 2 and sorted(top.returns) == sorted(np.sort(mem.returns)[-2:])
    assert len(lazy.top_fraction(0.01)) == 1
    train, valid = mem.split(0.25, seed=1)
    assert len(train) == 3 and len(valid) == 1
    assert sorted(np.concatenate([train.returns, valid.returns])) == sorted(mem.returns)
    lazy.close()


def test_positions_of_finds_a_views_episodes_in_another_view_of_the_same_arrays(tmp_path, climbing):
    ctx, batches, path = climbing
    for lazy in (False, True):
        ds = OfflineDataset.load(path, lazy=lazy)
        sub = ds.subset([3, 1])
        np.testing.assert_array_equal(ds.positions_of(sub), [1, 3])
        train, valid = ds.split(0.25, seed=1)
        parts = [(part, part.positions_of(sub)) for part in (train, valid)]
        assert sum(len(pos) for _, pos in parts) == 2  # each of sub's episodes is in one part
        found = np.concatenate([part.arrays(pos)["actions"] for part, pos in parts if len(pos)])
        key = lambda actions: sorted(map(bytes, actions))  # noqa: E731 (episodes as a multiset)
        assert key(found) == key(sub.arrays()["actions"]) != key(ds.subset([0, 2]).arrays()["actions"])
        assert ds.positions_of(OfflineDataset.load(path)) is None  # another load: other arrays
        ds.close()
    other = write(tmp_path / "aug.h5", ctx, batches[:2], qualities="poor")
    merged = OfflineDataset.load(path).merge(OfflineDataset.load(other))
    np.testing.assert_array_equal(merged.positions_of(merged.subset([4, 0, 5])), [0, 4, 5])
    assert merged.positions_of(OfflineDataset.load(other).subset([0])) is None


def test_merge_and_save(tmp_path, climbing):
    ctx, batches, path = climbing
    other = write(tmp_path / "aug.h5", ctx, batches[:2], qualities="poor",
                  labels={"score": np.array([0.5])})
    with pytest.warns(UserWarning, match=r"drops the labels \['score'\]"):  # only one dataset has it
        dropped = OfflineDataset.load(path).merge(OfflineDataset.load(other))
    assert dropped.label_names == [] and json.loads(dropped.attrs["dropped_labels"]) == ["score"]
    other = write(tmp_path / "aug2.h5", ctx, batches[:2], qualities="poor")
    merged = OfflineDataset.load(path).merge(OfflineDataset.load(other, lazy=True))
    assert len(merged) == 6
    assert (merged.qualities[4:] == "poor").all() and (merged.qualities[:4, 0] == "expert").all()
    assert [p["file"] for p in json.loads(merged.attrs["provenance"])] == ["climbing.h5", "aug2.h5"]
    merged.save(tmp_path / "merged.h5")
    back = OfflineDataset.load(tmp_path / "merged.h5")
    for k, v in merged.arrays().items():
        np.testing.assert_array_equal(back.arrays()[k], v, err_msg=k)
    assert len(json.loads(back.attrs["provenance"])) == 2
    lbf = DatasetWriter(tmp_path / "lbf.h5", {**ctx.runner.get_env_info(), "n_actions": 6}, "lbf", {}, {})
    with lbf as w:
        arr = OfflineDataset.load(path).arrays([0])
        arr["avail_actions"] = np.ones((1, 26, 2, 6))
        w.add_arrays(arr)
    with pytest.raises(DatasetError, match="cannot merge datasets of envs"):
        merged.merge(OfflineDataset.load(tmp_path / "lbf.h5"))


def test_labels_round_trip(tmp_path, climbing):
    ctx, batches, _ = climbing
    path = write(tmp_path / "l.h5", ctx, batches[:1], labels={"pref": np.array([[1.0, 2.0]])})
    ds = OfflineDataset.load(path)
    np.testing.assert_array_equal(ds.arrays()["labels/pref"], [[1.0, 2.0]])


def test_sample_trains_q_learner(climbing):
    ctx, batches, path = climbing
    ds = OfflineDataset.load(path, lazy=True)
    batch = ds.sample(3, rng=0)
    assert batch.batch_size == 3 and batch.max_seq_length == ds.env_info["episode_limit"] + 1
    assert set(ctx.buffer.scheme) <= set(batch.scheme)
    onehot = batch["actions_onehot"].argmax(-1, keepdim=True)
    assert th.equal(onehot, batch["actions"])
    params = [p.detach().clone() for p in ctx.learner.mac.parameters()]
    ctx.learner.train(batch, t_env=0, episode_num=0)
    assert any(not th.equal(p, q) for p, q in zip(params, ctx.learner.mac.parameters()))
    assert ds.sample(10, rng=np.random.default_rng(0)).batch_size == 10  # with replacement when too few
    ds.close()
