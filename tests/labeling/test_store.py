"""Labels in the dataset file: round trip with provenance, the content fingerprint, refusals, atomic writes (an
exception or kill -9 midway leaves the original byte-identical), and what the reader, merges, subsets and
scripts/drop_episodes.py do with a file holding preference sets."""
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from tests.labeling.datasets import write_dataset

from labeling.store import (
    content_fingerprint,
    preference_names,
    read_preferences,
    write_episode_labels,
    write_preferences,
)
from offline import DatasetError, OfflineDataset
from offline.label_store import edit_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAIRS = np.array([[0, 1], [5, 2], [3, 9]])
LABEL = np.array([1.0, 0.5, np.nan], dtype=np.float32)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "d.h5", E=12)


def test_round_trip_with_provenance(data):
    fp = content_fingerprint(data)
    attrs = {"task": "trajectory_preference", "labeler": "llm", "model": "m", "counts": {"tie": 1}, "cost": 0.5}
    assert write_preferences(data, "p", PAIRS, LABEL, attrs, fp) == data
    assert preference_names(data) == ["p"]
    pairs, label, got = read_preferences(data, "p")
    np.testing.assert_array_equal(pairs, PAIRS)
    np.testing.assert_array_equal(label, LABEL)  # NaN stays NaN
    assert pairs.dtype == np.int64 and label.dtype == np.float32
    assert {k: got[k] for k in attrs} == attrs and got["content_fingerprint"] == fp and got["n_pairs"] == 3
    # adding labels does not change the fingerprint; the dataset still loads (with its set named) and reads
    assert content_fingerprint(data) == fp
    ds = OfflineDataset.load(data)
    assert ds.preference_sets == ["p"] and content_fingerprint(ds) == fp
    np.testing.assert_array_equal(read_preferences(ds, "p")[0], PAIRS)


def test_refusals(data, tmp_path):
    fp = content_fingerprint(data)
    with pytest.raises(DatasetError, match=r"episodes 0\.\.11 of the file; got 0\.\.12"):
        write_preferences(data, "p", np.array([[0, 12]]), [1.0], {}, fp)
    with pytest.raises(ValueError, match="compare an episode with itself"):
        write_preferences(data, "p", np.array([[3, 3]]), [1.0], {}, fp)
    with pytest.raises(ValueError, match="labels must be in"):
        write_preferences(data, "p", np.array([[0, 1]]), [2.0], {}, fp)
    with pytest.raises(ValueError, match="label_name must be a non-empty name"):
        write_preferences(data, "", PAIRS, LABEL, {}, fp)
    other = write_dataset(tmp_path / "other.h5", E=12, seed=5)
    with pytest.raises(DatasetError, match=f"fingerprint {fp[:16]}.*fingerprint {content_fingerprint(other)[:16]}"):
        write_preferences(other, "p", PAIRS, LABEL, {}, fp)
    write_preferences(data, "p", PAIRS, LABEL, {}, fp)
    with pytest.raises(DatasetError, match="already has a preference set 'p'.*label_overwrite=True"):
        write_preferences(data, "p", PAIRS, LABEL, {}, fp)
    write_preferences(data, "p", PAIRS[:2], LABEL[:2], {}, fp, overwrite=True)
    assert len(read_preferences(data, "p")[0]) == 2
    with pytest.raises(DatasetError, match=r"has no preference set 'q' \(it has: p\).*label_preferences"):
        read_preferences(data, "q")
    assert not [f for f in os.listdir(os.path.dirname(data)) if ".tmp-" in f]  # no litter


def test_derived_data_is_refused(data, tmp_path):
    fp = content_fingerprint(data)
    write_preferences(data, "p", PAIRS, LABEL, {}, fp)
    ds = OfflineDataset.load(data)
    sub = ds.subset(np.arange(1, 12))
    with pytest.raises(DatasetError, match="was made for other episodes"):
        read_preferences(sub, "p")
    merged = ds.merge(OfflineDataset.load(write_dataset(tmp_path / "o.h5", E=3, seed=2)))
    merged.path = data  # even when pointed at the file, the episodes are not the labelled ones
    with pytest.raises(DatasetError, match="was made for other episodes"):
        read_preferences(merged, "p")
    # a copy of the file with other episodes but the same group (hand-edited) is refused too
    other = write_dataset(tmp_path / "x.h5", E=12, seed=9)
    with h5py.File(data, "r") as src, h5py.File(other, "r+") as dst:
        src.copy("preferences", dst)
    with pytest.raises(DatasetError, match="was made for other episodes"):
        read_preferences(other, "p")


def test_label_out_copy_and_episode_labels(data, tmp_path):
    fp = content_fingerprint(data)
    before = read_bytes(data)
    out = str(tmp_path / "sub" / "labelled.h5")
    assert write_preferences(data, "p", PAIRS, LABEL, {}, fp, out=out) == out
    assert read_bytes(data) == before and preference_names(out) == ["p"]
    write_preferences(data, "q", PAIRS, LABEL, {}, fp, out=out)  # added to the existing copy
    assert preference_names(out) == ["p", "q"]
    ret = np.arange(12, dtype=np.float32)
    write_episode_labels(out, {"p_return_hat": ret, "p_expert": (ret > 8).astype(np.uint8)}, {"learner": "omapl"},
                         fp)
    ds = OfflineDataset.load(out)
    assert ds.label_names == ["p_expert", "p_return_hat"]
    np.testing.assert_array_equal(ds.arrays()["labels/p_return_hat"], ret)
    with h5py.File(out, "r") as f:
        assert f["labels/p_expert"].attrs["learner"] == '"omapl"'
    with pytest.raises(DatasetError, match="first axis must be the 12 episodes"):
        write_episode_labels(out, {"bad": np.zeros(11)}, {}, fp)
    with pytest.raises(DatasetError, match="already has a label 'p_expert'"):
        write_episode_labels(out, {"p_expert": np.zeros(12)}, {}, fp)
    assert content_fingerprint(out) == fp


def test_exception_midway_leaves_the_original(data):
    before = read_bytes(data)

    def edit(f, E):
        f.create_group("preferences/x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        edit_dataset(data, edit)
    assert read_bytes(data) == before
    assert not [f for f in os.listdir(os.path.dirname(data)) if ".tmp-" in f]


def test_kill_midway_leaves_the_original(data):
    before = read_bytes(data)
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.join(ROOT, 'src')!r})
        import numpy as np
        from offline.label_store import edit_dataset
        def edit(f, E):
            f.create_dataset("preferences/x/pairs", data=np.zeros((1000, 2), dtype=np.int64))
            f.flush()
            print("editing", flush=True)
            time.sleep(60)
        edit_dataset({data!r}, edit)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "editing"
        temps = [f for f in os.listdir(os.path.dirname(data)) if ".tmp-" in f]
        assert len(temps) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert read_bytes(data) == before
    OfflineDataset.load(data)
    # the next writer in the folder deletes the dead writer's temp
    write_preferences(data, "p", PAIRS, LABEL, {}, content_fingerprint(data))
    assert not [f for f in os.listdir(os.path.dirname(data)) if ".tmp-" in f]


def flip_bytes(path, key):
    """Change bytes in the middle of the first stored chunk of `key`, behind HDF5's back (its Fletcher32 fails; XOR
    0xFF would not: it turns 16-bit words 0x0000 into 0xFFFF, the same modulo 65535)."""
    with h5py.File(path, "r") as f:
        info = f[key].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        raw = fh.read(4)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0x5A for b in raw))


def state_of(path):
    """Every array and attr of a dataset file, by HDF5 name (to compare what an edit kept)."""
    out = {}

    def visit(name, obj):
        attrs = {k: str(v) for k, v in obj.attrs.items()}
        try:
            out[name] = (obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None, attrs)
        except OSError:  # a damaged array
            out[name] = ("unreadable", attrs)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        out["/"] = (None, {k: str(v) for k, v in f.attrs.items()})
    return out


@pytest.mark.parametrize("damage, why", [
    (lambda f, path: f["preferences/p/pairs"].__setitem__(2, [3, 40]), r"it names episodes 0\.\.40 in a file of 12"),
    (lambda f, path: f["preferences/p"].__delitem__("label"), "not a preference set: it needs arrays 'pairs' and "
                                                              "'label'"),
    (lambda f, path: f["preferences/p/pairs"].attrs.__setitem__("x", 1), "its stored bytes fail their checksum"),
])
def test_a_damaged_preference_set_fails_only_where_it_is_used_and_the_edit_removes_it(data, damage, why):
    """One damaged set: the file still loads, its other sets and labels are read and written; using the damaged set
    (reading it, its id for labels derived from it) names scripts/edit_labels.py, which removes it and keeps the
    rest byte for byte."""
    import edit_labels

    fp = content_fingerprint(data)
    write_preferences(data, "p", PAIRS, LABEL, {}, fp)
    write_preferences(data, "q", PAIRS[:2], LABEL[:2], {}, fp)
    write_episode_labels(data, {"score": np.arange(12.0)}, {"preference_set": "q"}, fp)
    write_episode_labels(data, {"from_p": np.arange(12.0)}, {"preference_set": "p"}, fp)
    with h5py.File(data, "r+") as f:
        damage(f, data)
    if "checksum" in why:
        flip_bytes(data, "preferences/p/pairs")
    ds = OfflineDataset.load(data)  # plain reading works
    assert ds.preference_sets == ["p", "q"] and ds.label_names == ["from_p", "score"]
    np.testing.assert_array_equal(read_preferences(ds, "q")[0], PAIRS[:2])
    write_preferences(data, "r", PAIRS, LABEL, {}, fp)  # the file stays writable
    command = f"python scripts/edit_labels.py {data} --remove-preference-set p"
    from offline.label_store import preference_set_id, stale_derivation
    for use in (lambda: read_preferences(data, "p"), lambda: preference_set_id(data, "p"),
                lambda: stale_derivation(data, "from_p")):
        with pytest.raises(DatasetError, match=why) as e:
            use()
        assert "'preferences/p' is damaged" in str(e.value) and command in str(e.value)
    before = state_of(data)
    assert edit_labels.main([str(data), "--remove-preference-set", "p"]) == 0
    after = state_of(data)
    assert preference_names(data) == ["q", "r"]
    assert {k: v for k, v in before.items() if not k.startswith("preferences/p")} == after  # the rest, unchanged
    assert "was derived from preference set 'p', which" in stale_derivation(data, "from_p")  # refused as stale
    np.testing.assert_array_equal(read_preferences(data, "q")[1], LABEL[:2])


def test_edit_labels_removes_and_renames_in_one_write_or_changes_nothing(data, capsys):
    import edit_labels

    fp = content_fingerprint(data)
    write_preferences(data, "p", PAIRS, LABEL, {}, fp)
    write_episode_labels(data, {"a": np.arange(12.0), "b": np.ones(12)}, {"label_name": "a"}, fp)
    write_episode_labels(data, {"p_expert": np.zeros(12)}, {"preference_set": "p"}, fp)
    before = state_of(data)
    for argv, said in ((["--remove-label", "nope"], "has no label 'nope' (labels present: a, b, p_expert)"),
                       (["--remove-preference-set", "nope"], "has no preference set 'nope' (preference sets present: "
                                                             "p)"),
                       (["--rename-label", "a=b"], "exists already"),
                       (["--rename-label", "a=x/y"], "a new label name must be a non-empty name"),
                       (["--remove-label", "a", "--rename-label", "a=c"], "both removed and renamed")):
        assert edit_labels.main([str(data), *argv]) == 1
        assert said in capsys.readouterr().err
    assert state_of(data) == before  # nothing changed
    assert edit_labels.main([str(data), "--remove-label", "b", "--rename-label", "a=b", "--remove-preference-set",
                             "p"]) == 0
    out = capsys.readouterr().out
    assert "removed labels/b, preferences/p; renamed labels/a to labels/b" in out
    assert "labels ['p_expert'] were derived from the removed preference set 'p'" in out
    ds = OfflineDataset.load(data)
    assert ds.label_names == ["b", "p_expert"] and preference_names(data) == []
    np.testing.assert_array_equal(ds.label("b"), np.arange(12.0))
    assert ds.label_attrs("b")["label_name"] == "b" and ds.label_attrs("b")["renamed_from"] == "a"
    assert content_fingerprint(data) == fp


def test_subset_merge_and_drop_episodes_leave_preference_sets_out(data, tmp_path):
    write_preferences(data, "p", PAIRS, LABEL, {}, content_fingerprint(data))
    write_episode_labels(data, {"score": np.arange(12.0)}, {}, content_fingerprint(data))
    ds = OfflineDataset.load(data)
    with pytest.warns(UserWarning, match=r"preference sets \['p'\].*not written.*label_preferences"):
        ds.subset([0, 2, 4]).save(tmp_path / "sub.h5")
    sub = OfflineDataset.load(tmp_path / "sub.h5")
    assert sub.preference_sets == [] and preference_names(tmp_path / "sub.h5") == []
    np.testing.assert_array_equal(sub.arrays()["labels/score"], [0.0, 2.0, 4.0])  # per-episode labels follow
    with pytest.warns(UserWarning, match="preference sets"):
        ds.merge(ds).save(tmp_path / "merged.h5")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "drop_episodes.py"), data,
                          str(tmp_path / "dropped.h5"), "--episodes", "3"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "preference sets ['p']" in res.stderr and preference_names(tmp_path / "dropped.h5") == []


def test_a_symlinked_dataset_gets_the_labels_and_stays_a_link(data, tmp_path):
    link = tmp_path / "link.h5"
    os.symlink(data, link)
    write_preferences(str(link), "s", PAIRS, LABEL, {}, content_fingerprint(data))
    assert os.path.islink(link) and preference_names(data) == ["s"]


def test_permissions_are_kept_and_a_read_only_file_is_refused(data, monkeypatch):
    os.chmod(data, 0o600)
    write_preferences(data, "s", PAIRS, LABEL, {}, content_fingerprint(data))
    assert os.stat(data).st_mode & 0o777 == 0o600
    before = read_bytes(data)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if (mode == os.W_OK and os.fspath(p) == data)
                        else real_access(p, mode, **k))  # as a user without write permission (tests may run as root)
    with pytest.raises(DatasetError, match=r"d.h5 is not writable by you \(mode 600\).*chmod u\+w.*label_out="):
        write_preferences(data, "t", PAIRS, LABEL, {}, content_fingerprint(data))
    assert read_bytes(data) == before
