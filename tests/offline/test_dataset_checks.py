"""Datasets are not trusted byte for byte: HDF5 checksums, content validation on load, and drop_episodes."""
import hashlib
import json
import re

import h5py
import numpy as np
import pytest

import drop_episodes
from offline import DatasetError, DatasetWriter, OfflineDataset

INFO = {"n_agents": 2, "n_actions": 3, "obs_shape": 4, "state_shape": 5, "episode_limit": 6}
E, CHUNK = 10, 2


def episodes(E=E, seed=0):
    """E episodes of 2..6 transitions; even ones end with a terminal; agent 1 can never take action 0."""
    rng = np.random.default_rng(seed)
    T1, n = INFO["episode_limit"] + 1, INFO["n_agents"]
    L = 2 + np.arange(E) % 5
    filled = (np.arange(T1) <= L[:, None]).astype(np.uint8)[..., None]
    avail = np.ones((E, T1, n, 3), np.uint8)
    avail[:, :, 1, 0] = 0
    actions = rng.integers(1, 3, (E, T1, n, 1))
    terminated = np.zeros((E, T1, 1), np.uint8)
    terminated[np.arange(E), L - 1, 0] = np.arange(E) % 2 == 0
    return {"obs": rng.normal(size=(E, T1, n, 4)), "state": rng.normal(size=(E, T1, 5)),
            "actions": actions * filled[..., None], "avail_actions": avail * filled[..., None],
            "reward": rng.normal(size=(E, T1, 1)) * filled, "terminated": terminated, "filled": filled}


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "d.h5"
    with DatasetWriter(p, INFO, "matrix_game", {"game": "climbing"}, {"seed": 1}, chunk_episodes=CHUNK) as w:
        w.add_arrays(episodes(), qualities="expert")
    return p


def edit(path, key, index, value):
    with h5py.File(path, "r+") as f:
        f[key][index] = value


def load_error(path, **kw):
    with pytest.raises(DatasetError) as e:
        OfflineDataset.load(path, **kw)
    return str(e.value)


def flip_chunk(path, key, chunk):
    """Flip bytes in the middle of one stored chunk of `key`, behind HDF5's back."""
    with h5py.File(path, "r") as f:
        info = f[key].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        raw = fh.read(4)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0xFF for b in raw))


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_valid_file_loads_and_has_checksums(path):
    with h5py.File(path) as f:
        assert all(ds.fletcher32 for ds in f.values() if isinstance(ds, h5py.Dataset))
        assert f["obs"].compression == "lzf"
    ds = OfflineDataset.load(path)
    assert len(ds) == E
    lazy = OfflineDataset.load(path, lazy=True)
    np.testing.assert_array_equal(lazy.arrays()["obs"], ds.arrays()["obs"])
    lazy.close()


def test_flipped_bytes_named(path):
    flip_chunk(path, "obs", 1)  # episodes 2..3
    msg = load_error(path)
    assert "'obs'" in msg and "Fletcher32 checksum" in msg and "episodes 2..3" in msg and "drop_episodes.py" in msg
    lazy = OfflineDataset.load(path, lazy=True)  # lazily, reads of other chunks still work
    lazy.arrays([0, 1, 5])
    with pytest.raises(DatasetError, match=r"'obs'.*episodes 2\.\.3"):
        lazy.arrays([1, 3])
    lazy.close()


def test_nan_observation_named(path):
    edit(path, "obs", (3, 2, 1, 0), np.nan)
    msg = load_error(path)
    assert "'obs' is not finite" in msg and "episode 3, step 2" in msg and "drop_episodes.py" in msg
    lazy = OfflineDataset.load(path, lazy=True)  # a lazy read names the file's episode number
    lazy.subset([0, 3]).arrays([0])
    with pytest.raises(DatasetError, match="episode 3, step 2"):
        lazy.subset([0, 3]).arrays([1])
    lazy.close()


def test_action_out_of_range_named(path):
    edit(path, "actions", (4, 1, 0, 0), 99)
    msg = load_error(path)
    assert "'actions' is outside [0, 3) at episode 4, step 1" in msg and "99" in msg


def test_unavailable_action_named(path):
    edit(path, "actions", (5, 1, 1, 0), 0)  # agent 1 can never take action 0
    assert "'actions' is not available (avail_actions is 0 for it) at episode 5, step 1" in load_error(path)


def test_noncontiguous_filled_named(path):
    edit(path, "filled", (6, 1, 0), 0)
    assert "'filled' is not 1s then 0s covering at least one transition at episode 6, step 1" in load_error(path)


def test_terminal_flags_named(path):
    edit(path, "terminated", (1, 0, 0), 1)  # episode 1 has 3 transitions: a terminal only at step 2
    assert "'terminated' is set where it is not the episode's last transition at episode 1, step 0" in \
        load_error(path)


def test_terminated_and_truncated_together(path):
    edit(path, "truncated", (0, 1, 0), 1)  # episode 0 ends at step 1 with a terminal
    assert "'terminated' and truncated are both set" in load_error(path)
    with h5py.File(path, "r+") as f:  # valid for data stored with truncation_as_terminal
        f.attrs["truncation_as_terminal"] = True
    OfflineDataset.load(path)


def test_drop_invalid_episodes(path, tmp_path, capsys):
    flip_chunk(path, "state", 4)  # episodes 8..9
    edit(path, "obs", (3, 2, 1, 0), np.inf)
    edit(path, "actions", (5, 0, 0, 0), -1)
    before = digest(path)
    out = tmp_path / "clean.h5"
    assert drop_episodes.main([str(path), str(out), "--invalid"]) == 0
    assert "dropped 4 episode(s) [3, 5, 8, 9]" in capsys.readouterr().out
    assert digest(path) == before
    ds = OfflineDataset.load(out)
    assert len(ds) == E - 4
    kept = [0, 1, 2, 4, 6, 7]
    want = episodes()
    np.testing.assert_allclose(ds.arrays()["obs"], want["obs"][kept].astype(np.float32))
    assert json.loads(ds.attrs["dropped_episodes"])["episodes"] == [3, 5, 8, 9]
    assert json.loads(ds.attrs["env_args"]) == {"game": "climbing"} and json.loads(ds.attrs["config"]) == {"seed": 1}
    assert (ds.qualities == "expert").all() and ds.attrs["n_terminated"] == 4  # the even ones

    # dropping too little is refused, and nothing is written
    assert drop_episodes.main([str(path), str(tmp_path / "partial.h5"), "--episodes", "3,8-9"]) == 1
    assert "episodes [5] fail validation" in capsys.readouterr().err
    assert not (tmp_path / "partial.h5").exists()
    assert drop_episodes.main([str(path), str(path), "--invalid"]) == 1 and digest(path) == before


def test_drop_listed_episodes(path, tmp_path):
    out = tmp_path / "fewer.h5"
    assert drop_episodes.main([str(path), str(out), "--episodes", "0,2-3"]) == 0
    ds = OfflineDataset.load(out)
    np.testing.assert_allclose(ds.returns, OfflineDataset.load(path).returns[[1, 4, 5, 6, 7, 8, 9]])


def test_file_without_checksums_loads(path, tmp_path):
    """A file written before checksums (same schema): the same datasets without fletcher32."""
    old = tmp_path / "old.h5"
    with h5py.File(path) as src, h5py.File(old, "w") as dst:
        dst.attrs.update(src.attrs)
        for key, ds in src.items():
            dst.create_dataset(key, data=ds[()], chunks=ds.chunks, maxshape=ds.maxshape, compression="lzf")
        assert not dst["obs"].fletcher32
    np.testing.assert_array_equal(OfflineDataset.load(old).arrays()["obs"], OfflineDataset.load(path).arrays()["obs"])


def test_a_dataset_listed_twice_is_refused(tmp_path):
    """offline_dataset=[a, a] (or a and a link to it) would train on every episode twice: refused by name."""
    from offline.sampling import dataset_paths
    from utils.config import ConfigError

    a = tmp_path / "a.h5"
    a.write_bytes(b"")
    (tmp_path / "link.h5").symlink_to(a)
    assert dataset_paths([str(a), str(tmp_path / "b.h5")]) == [str(a), str(tmp_path / "b.h5")]
    with pytest.raises(ConfigError, match=r"offline_dataset lists .*a.h5 twice: list each dataset once"):
        dataset_paths([str(a), str(a)])
    with pytest.raises(ConfigError, match=r"lists .*a.h5 and .*link.h5, one file"):
        dataset_paths([str(a), str(tmp_path / "link.h5")])


def test_nan_episode_return_named_and_dropped(path, tmp_path, capsys):
    """A NaN return would label as a tie with every episode (and report agreement 1.0): refused, and dropped by
    drop_episodes --invalid."""
    edit(path, "episode_return", 4, np.nan)
    msg = load_error(path)
    assert "'episode_return' is not finite (NaN or inf) at episode(s) 4 (1 of 10)" in msg and "drop_episodes.py" in msg
    assert "'episode_return' is not finite" in load_error(path, lazy=True)
    out = tmp_path / "clean.h5"
    assert drop_episodes.main([str(path), str(out), "--invalid"]) == 0
    assert "dropped 1 episode(s) [4]" in capsys.readouterr().out
    assert np.isfinite(OfflineDataset.load(out).returns).all()


@pytest.mark.parametrize("make, match", [
    (lambda f: f.create_dataset("labels", data=1), r"'labels' is not a group"),
    (lambda f: f.create_dataset("preferences", data=1), r"'preferences' is not a group"),
])
def test_malformed_label_groups_name_the_file_and_group(path, make, match):
    with h5py.File(path, "r+") as f:
        make(f)
    msg = load_error(path)
    assert str(path) in msg and re.search(match, msg), msg


@pytest.mark.parametrize("make, match", [
    (lambda f: f.create_group("labels/g"), r"'labels/g' is damaged \(it is a group, not a per-episode array"),
    (lambda f: f.create_dataset("labels/g", data=3.0), r"'labels/g' is damaged \(it is of shape \(\), not a "
                                                       r"per-episode array"),
    (lambda f: f.create_dataset("labels/g", data=np.zeros(3)), r"'labels/g' is damaged \(it has 3 rows for 10 "
                                                               r"episodes"),
    (lambda f: f.create_dataset("labels/g", data=np.random.default_rng(0).normal(size=E), fletcher32=True,
                                chunks=(2,)), r"'labels/g' is damaged \(its stored bytes fail their checksum"),
])
@pytest.mark.parametrize("lazy", [False, True])
def test_a_damaged_label_fails_only_where_it_is_used(path, make, match, lazy):
    """The episodes and the other labels load and read; the damaged label's error names scripts/edit_labels.py."""
    from offline.sampling import label_rows

    with h5py.File(path, "r+") as f:
        make(f)
        f.create_dataset("labels/good", data=np.arange(E, dtype=np.float32))
    if "checksum" in match:
        flip_chunk(path, "labels/g", 0)
    ds = OfflineDataset.load(path, lazy=lazy)
    np.testing.assert_array_equal(ds.label("good"), np.arange(E))
    assert ds.episode_batch(np.arange(3))["obs"].shape[0] == 3
    assert "good" in ds.label_names and ("g" not in ds.label_names or lazy and "checksum" in match)
    for use in (lambda: ds.label("g"), lambda: ds.subset([0, 1]).label("g"),
                lambda: label_rows(ds, "label:g", "offline_expert", "")):
        with pytest.raises(DatasetError, match=match) as e:
            use()
        assert f"python scripts/edit_labels.py {path} --remove-label g" in str(e.value)


def damaged_label_file(path):
    """`path` with labels 'good' (sound) and 'g' (a chunk failing its checksum: found only when read, lazily)."""
    with h5py.File(path, "r+") as f:
        f.create_dataset("labels/g", data=np.arange(E, dtype=np.float32), fletcher32=True, chunks=(2,))
        f.create_dataset("labels/good", data=np.arange(E, dtype=np.float32))
    flip_chunk(path, "labels/g", 0)
    return path


def other_file(tmp_path, labels):
    p = tmp_path / "other.h5"
    with DatasetWriter(p, INFO, "matrix_game", {"game": "climbing"}, {"seed": 2}) as w:
        w.add_arrays(episodes(seed=1), qualities="poor",
                     labels={n: np.full(E, 7, np.float32) for n in labels})
    return p


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("other_has_g", [False, True])
def test_a_merge_carries_a_damaged_label_as_damaged(path, tmp_path, lazy, other_has_g, recwarn):
    """A label failing its checksum in one file is neither a merge failure nor 'only one of the datasets has it':
    the merge keeps the labels both can read, and the damaged one fails where it is used, naming the file and the
    edit; saving the merge leaves it out with a warning naming that edit."""
    damaged_label_file(path)
    other = other_file(tmp_path, ["good", "g"] if other_has_g else ["good"])
    for first, second in ((path, other), (other, path)):
        merged = OfflineDataset.load(first, lazy=lazy).merge(OfflineDataset.load(second, lazy=lazy))
        assert merged.label_names == ["good"] and set(merged.damaged_labels) == {"g"}
        np.testing.assert_array_equal(merged.label("good")[E:] if first == path else merged.label("good")[:E],
                                      np.full(E, 7))
        with pytest.raises(DatasetError, match=r"'labels/g' is damaged \(its stored bytes fail their checksum") as e:
            merged.label("g")
        assert f"python scripts/edit_labels.py {path} --remove-label g" in str(e.value)
        assert not [w for w in recwarn if "merging drops" in str(w.message)]
        where = re.escape(str(path))
        with pytest.warns(UserWarning, match=rf"the damaged labels \['g'\] of {where} are not written "
                                             rf".*python scripts/edit_labels.py {where} --remove-label g"):
            merged.save(tmp_path / "merged.h5")
        back = OfflineDataset.load(tmp_path / "merged.h5")
        assert back.label_names == ["good"] and back.damaged_labels == {}
        (tmp_path / "merged.h5").unlink()


def test_a_lazy_subset_saves_without_its_damaged_label(path, tmp_path):
    damaged_label_file(path)
    ds = OfflineDataset.load(path, lazy=True)
    assert ds.label_names == ["g", "good"]  # lazily, the checksum is known only when the label is read
    with pytest.warns(UserWarning, match=r"the damaged labels \['g'\] .* are not written"):
        ds.subset([0, 1, 5]).save(tmp_path / "sub.h5")
    back = OfflineDataset.load(tmp_path / "sub.h5")
    assert back.label_names == ["good"]
    np.testing.assert_array_equal(back.label("good"), [0, 1, 5])
    assert ds.subset([4, 5]).arrays().keys() >= {"labels/g", "labels/good"}  # rows in sound chunks read as before
    rows = ds.subset([0, 5])
    assert "labels/g" not in rows.arrays() and rows.label_names == ["good"] and "g" in rows.damaged_labels
    with pytest.raises(DatasetError, match=r"python scripts/edit_labels.py .* --remove-label g"):
        rows.label("g")
