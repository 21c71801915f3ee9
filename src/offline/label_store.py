"""Label data stored inside a dataset file: preference sets `preferences/<name>/` and per-episode results
`labels/<name>` (the layout; the labeling layer, src/labeling, makes them).

    preferences/<name>/pairs   [P, 2] int64    episode indices (rows of this file), first and second of each pair
    preferences/<name>/label   [P]    float32  1 = first preferred, 0 = second, 0.5 = tie (equal), NaN = unlabeled
    preferences/<name> attrs   every provenance key as JSON text, plus `content_fingerprint`, `n_pairs`, `created`
    labels/<name>              [E, ...]        per-episode results (O-MAPL's <name>_return_hat, <name>_expert, ...);
                                               attrs as above

It lives here, beside the format, because both the reader (its checks, merges and subsets) and the offline samplers
need it; labeling sits above offline and re-exports it from labeling/store.py.

Pair indices name episodes of one particular file, so every set records the dataset's content fingerprint (a
SHA-256 of the episode data, not of the file's bytes, so adding labels does not change it): reading a set against
other data (a merge, a subset, another file) is refused, naming both fingerprints.

A damaged set or label (not the layout above, indices past the file's episodes, bytes failing their checksum) fails
only where it is used, with a message naming `scripts/edit_labels.py`, which removes (or renames) named sets and labels
through the same copy-edit-rename write, keeping everything else; the file's episodes and other labels stay usable.

Writes never edit a dataset in place: the file is copied to a temporary name in the target folder
(utils.files.temp_path, so the litter of a killed writer is cleaned by the next one), the copy is edited, and it is
renamed over the target when complete (the same file, or `out`): an interruption, even kill -9, leaves the original
byte-identical. A folder lock serialises writers of the same folder, so two labeling runs never drop each other's
sets.
"""
import json
import os
import re
import shutil
import time
from datetime import datetime, timezone

import h5py
import numpy as np

from offline.format import EPISODE_FIELDS, TRANSITION_FIELDS, DatasetError, missing_dataset, to_json
from utils.config import ConfigError
from utils.files import FolderLock, clean_stale_temps, remove, temp_path

GROUP = "preferences"
LABELS = "labels"
NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_BLOCK = 1024  # episodes hashed per read
LOCK_WAIT_S = 120  # how long a writer waits for another writer of the same folder


def label_command(path, name="NAME", labeler="oracle"):
    """The command that makes a preference set (named in errors about a missing one) or finishes it."""
    return (f"python src/main.py --config=label_preferences --env-config=<env> with offline_dataset={path} "
            f"label_name={name} labeler={labeler}")


def edit_command(path, option, name):
    """The scripts/edit_labels.py command that removes preference set or label `name` (`option`: --remove-label,
    --remove-preference-set) from dataset `path`, named in the errors about a damaged one."""
    return f"python scripts/edit_labels.py {path} {option} {name}"


def damaged(path, where, name, why):
    """The DatasetError of a damaged preference set (`where` = GROUP) or label (LABELS) `name` of dataset `path`."""
    option = "--remove-label" if where == LABELS else "--remove-preference-set"
    return DatasetError(f"{path}: '{where}/{name}' is damaged ({why}); the file's episodes, other labels and other "
                        f"preference sets are still usable. Remove it, keeping the rest (a copy of the file edited and "
                        f"renamed over it), with: {edit_command(path, option, name)}; then make it again")


def check_name(name, what="label_name"):
    if not isinstance(name, str) or not NAME.match(name or "") or name in (".", ".."):
        raise ConfigError(f"{what} must be a non-empty name of letters, digits, '_', '-' or '.' (not '.' or '..'), "
                          f"got {name!r}")


# ----- the content fingerprint -----
def content_fingerprint(data):
    """SHA-256 (hex) of a dataset's episode data: env name and shapes, then every transition and episode field in
    the stored dtypes, episode by episode, and the quality-code mapping. `data`: an OfflineDataset (in memory or
    lazy, a subset or a merge: its own episodes) or a path. Labels and preference sets are not part of it, nor are
    compression, chunking or the creation time: the same episodes give the same fingerprint in any file."""
    from offline.reader import OfflineDataset  # the reader imports this module for its checks

    if isinstance(data, (str, os.PathLike)):
        ds = OfflineDataset.load(data, lazy=True)
        try:
            return content_fingerprint(ds)
        finally:
            ds.close()
    import hashlib
    h = hashlib.sha256()
    h.update(fingerprint_header(data).encode())
    fields = [*TRANSITION_FIELDS, *EPISODE_FIELDS]
    for start in range(0, len(data), _BLOCK):
        arr = data.arrays(np.arange(start, min(len(data), start + _BLOCK)), labels=False)
        for k in fields:
            dtype = TRANSITION_FIELDS[k][0] if k in TRANSITION_FIELDS else arr[k].dtype
            h.update(np.ascontiguousarray(arr[k], dtype=dtype).tobytes())
    return h.hexdigest()


def fingerprint_header(data):
    """What a content fingerprint hashes first (JSON text): env name, shapes, episode count and quality codes of an
    OfflineDataset. Datasets whose headers differ have different fingerprints (offline.sampling.summary_key)."""
    return to_json({"env": data.attrs["env"], "env_info": data.env_info, "episodes": len(data),
                    "quality_codes": data.quality_codes})


class LabelExistsError(DatasetError):
    """write_preferences / write_episode_labels: the file already holds a set or label of that name (and overwrite was
    not asked for); nothing was written."""


class EpisodesChangedError(DatasetError):
    """The file's episodes are not the ones an edit or a set was made for (content fingerprints differ)."""


def _mismatch(path, recorded, actual, what, again=None):
    return EpisodesChangedError(
        f"{what} was made for other episodes: it records the dataset fingerprint {recorded[:16]}..., but {path} "
        f"holds episodes with fingerprint {actual[:16]}... (a merged, subset or different file: its indices would "
        f"name other episodes). Label this file again ({again or label_command(path)}) or use the file it was made "
        f"for")


def check_made_for(attrs, actual, where, what, again=None):
    """A preference set's or label's recorded `content_fingerprint` (in `attrs`) must be `actual`, the fingerprint
    of the data it is used with (`where` names that data, `what` the set or label, `again` the command that labels
    it anew): an EpisodesChangedError naming both otherwise."""
    recorded = attrs.get("content_fingerprint")
    if recorded != actual:
        raise _mismatch(where, str(recorded), actual, what, again)


# ----- attrs -----
def _write_attrs(obj, attrs):
    for k, v in attrs.items():
        obj.attrs[k] = to_json(v)


def _read_attrs(obj):
    out = {}
    for k, v in obj.attrs.items():
        v = v.decode() if isinstance(v, bytes) else v
        try:
            out[k] = json.loads(v) if isinstance(v, str) else (v.item() if isinstance(v, np.generic) else v)
        except ValueError:
            out[k] = v
    return out


# ----- reading -----
def _path_of(source):
    path = source if isinstance(source, (str, os.PathLike)) else (getattr(source, "path", None)
                                                                  or getattr(source, "source_path", None))
    if path is None:
        raise DatasetError("preference sets are read from a file: pass its path, or a dataset loaded from one")
    return os.fspath(path)


def preference_names(source):
    """Sorted names of the preference sets in a dataset file (a path, or a dataset loaded from one)."""
    path = _path_of(source)
    if not os.path.exists(path):
        raise missing_dataset(f"offline dataset {path}")
    with h5py.File(path, "r") as f:
        return sorted(f[GROUP]) if GROUP in f else []


def read_preferences(source, name, check=True):
    """(pairs [P, 2] int64, label [P] float32, attrs dict) of preference set `name`.

    `source`: a path, or an OfflineDataset. With check=True the set's recorded content fingerprint must equal that
    of the data it is used with: the dataset given (so a subset or merge of the labelled file is refused), else the
    file. A missing set is an error naming the sets present and the labeling command."""
    path = _path_of(source)
    names = preference_names(path)
    if name not in names:
        raise DatasetError(f"{path} has no preference set '{name}' (it has: {', '.join(names) or 'none'}); make it "
                           f"with: {label_command(path, name)}")
    with h5py.File(path, "r") as f:
        g = _preference_group(f, path, name)
        pairs, label, attrs = g["pairs"][()].astype(np.int64), g["label"][()].astype(np.float32), _read_attrs(g)
    if check:
        where = path if isinstance(source, (str, os.PathLike)) else f"this dataset (derived from {path})"
        check_made_for(attrs, content_fingerprint(source), where, f"preference set '{name}' of {path}")
        E = len(source) if not isinstance(source, (str, os.PathLike)) else None
        if E is not None and len(pairs) and pairs.max() >= E:
            raise DatasetError(f"preference set '{name}' of {path}: pair indices up to {pairs.max()} for {E} episodes")
    return pairs, label, attrs


def preference_set_id(path, name):
    """What identifies one version of preference set `name` in a dataset file: SHA-256 (16 hex) of its pairs, labels
    and creation stamp; None when the file has no such set. Recorded in the labels derived from it (O-MAPL's
    <set>_expert), so that replacing the set (label_overwrite=True) makes them stale instead of silently kept."""
    import hashlib

    with h5py.File(path, "r") as f:
        if GROUP not in f or name not in f[GROUP]:
            return None
        g = _preference_group(f, path, name)
        h = hashlib.sha256(np.ascontiguousarray(g["pairs"][()], dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(g["label"][()], dtype=np.float32).tobytes())
        h.update(str(_read_attrs(g).get("created", "")).encode())
    return h.hexdigest()[:16]


def label_id(path, name):
    """What identifies one version of `labels/<name>` in a dataset file: SHA-256 (16 hex) of its values (dtype, shape,
    bytes) and creation stamp, as preference_set_id is of a set; None when the file has no such label. A run that
    reads the label (offline_reward=label:, offline_expert=label: or top:) records it, so that a resume after the
    label was replaced (label_overwrite=True) is refused instead of training on other data."""
    import hashlib

    with h5py.File(path, "r") as f:
        if LABELS not in f or name not in f[LABELS]:
            return None
        dset = f[LABELS][name]
        values = np.ascontiguousarray(dset[()])
        h = hashlib.sha256(f"{values.dtype.str} {values.shape}".encode())
        h.update(values.tobytes())
        h.update(str(_read_attrs(dset).get("created", "")).encode())
    return h.hexdigest()[:16]


def stale_derivation(path, name):
    """Why labels/<name> of dataset `path` no longer matches the preference set it was derived from (its attr
    `preference_set`), or None (not derived from a set, or the set is the one it was made from). Labels that record
    the set's id (preference_set_id) are compared by it; older ones by time: a set created after the label is not
    its source."""
    attrs = episode_label_attrs(path, name)
    set_name = attrs.get("preference_set")
    if not set_name:
        return None
    current = preference_set_id(path, set_name)
    if current is None:
        return f"labels/{name} was derived from preference set '{set_name}', which {path} no longer has"
    recorded = attrs.get("preference_set_id")
    if recorded is not None:
        stale = recorded != current
    else:
        with h5py.File(path, "r") as f:
            made = str(_read_attrs(f[GROUP][set_name]).get("created", ""))
        stale = bool(made) and made > str(attrs.get("created", made))
    if not stale:
        return None
    return (f"labels/{name} was derived from preference set '{set_name}', which has been replaced since (relabeled "
            f"with label_overwrite=True): it ranks episodes by the old labels")


def check_groups(f, path):
    """The reader's check of the groups that hold preference sets: each set is checked where it is used
    (read_preferences), so that one damaged set leaves the file and its other sets usable."""
    if GROUP in f and not isinstance(f[GROUP], h5py.Group):
        raise DatasetError(f"{path}: '{GROUP}' is not a group of preference sets")


UNREADABLE = "its stored bytes fail their checksum or decompression: they were changed or damaged after writing"


def set_problem(g, E):
    """What is wrong with preference set group `g` of a file of E episodes (shapes, indices in 0..E-1, readable
    arrays: it reads the pairs and labels), or None."""
    if not isinstance(g, h5py.Group) or "pairs" not in g or "label" not in g:
        return "not a preference set: it needs arrays 'pairs' and 'label'"
    if not all(isinstance(g[k], h5py.Dataset) and g[k].shape for k in ("pairs", "label")):
        return "'pairs' or 'label' is not an array; expected pairs [P, 2] and label [P]"
    P = g["pairs"].shape[0]
    if g["pairs"].shape != (P, 2) or g["label"].shape != (P,):
        return f"pairs {g['pairs'].shape} and label {g['label'].shape}; expected [P, 2] and [P]"
    try:
        pairs = g["pairs"][()]
        g["label"][()]
    except OSError:
        return UNREADABLE
    if P and (pairs.min() < 0 or pairs.max() >= E):
        return f"it names episodes {pairs.min()}..{pairs.max()} in a file of {E}"
    return None


def label_problem(obj, E):
    """What is wrong with labels/<name> object `obj` of a file of E episodes (its layout), or None."""
    if not isinstance(obj, h5py.Dataset) or not obj.shape:
        what = "a group" if isinstance(obj, h5py.Group) else f"of shape {getattr(obj, 'shape', None)}"
        return f"it is {what}, not a per-episode array [E, ...] (E = {E})"
    if obj.shape[0] != E:
        return f"it has {obj.shape[0]} rows for {E} episodes"
    return None


def _preference_group(f, path, name):
    """Preference set `name` of open file `f`, checked (set_problem): a damaged one is an error naming the edit."""
    g = f[GROUP][name]
    why = set_problem(g, f["filled"].shape[0])
    if why:
        raise damaged(path, GROUP, name, why)
    return g


# ----- writing -----
def _check_pairs(pairs, label, E, where):
    pairs, label = np.asarray(pairs), np.asarray(label, dtype=np.float32)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
        raise ValueError(f"{where}: pairs must be integer [P, 2], got {pairs.dtype} {pairs.shape}")
    if label.shape != (len(pairs),):
        raise ValueError(f"{where}: label must be [P] = [{len(pairs)}], got {label.shape}")
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= E):
        raise DatasetError(f"{where}: pair indices must be episodes 0..{E - 1} of the file; got "
                           f"{pairs.min()}..{pairs.max()}")
    if (pairs[:, 0] == pairs[:, 1]).any():
        raise ValueError(f"{where}: pairs {np.flatnonzero(pairs[:, 0] == pairs[:, 1])[:5].tolist()} compare an "
                         f"episode with itself")
    finite = label[np.isfinite(label)]
    if np.isinf(label).any() or (finite < 0).any() or (finite > 1).any():
        raise ValueError(f"{where}: labels must be in [0, 1] (1 first, 0 second, 0.5 tie) or NaN (unlabeled)")
    return pairs.astype(np.int64), label


def _lock(folder):
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        lock = FolderLock.try_acquire(folder)
        if lock is not None:
            return lock
        if time.monotonic() > deadline:
            raise TimeoutError(f"another process has been writing in {folder} for over {LOCK_WAIT_S}s; retry later")
        time.sleep(0.2)


def edit_dataset(path, edit, expected_fingerprint=None, out=None):
    """Apply `edit(h5py.File opened r+, n_episodes)` to a copy of dataset `path` and rename the copy to `out`
    (default: over `path`) once complete. When `out` exists already it is the one edited (so several sets can be
    added to one label_out file), and it must hold the same episodes. `expected_fingerprint`: the content
    fingerprint the edit was made for (refused otherwise, naming both). Returns the path written."""
    from offline.reader import OfflineDataset

    given = os.fspath(out) if out else os.fspath(path)
    # a symlink is followed: the file it names gets the edit (the temporary copy is made beside that file and renamed
    # over it), the link stays a link
    path = os.path.realpath(os.fspath(path))
    out = os.path.realpath(os.fspath(out)) if out else path
    if os.path.isdir(out):
        raise DatasetError(f"{given} is a folder: labels are written into a dataset file; give a file path")
    base = out if os.path.exists(out) else path
    if os.path.exists(out) and not os.access(out, os.W_OK):
        raise DatasetError(f"{given} is not writable by you (mode {oct(os.stat(out).st_mode & 0o777)[2:]}): it is "
                           f"left as it is; make it writable (chmod u+w {given}) or write the labels into a copy "
                           f"(label_out=<new file>)")
    folder = os.path.dirname(out)
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise DatasetError(f"cannot write in {folder} (the folder of {given}): labels are written to a temporary "
                           f"file there and renamed; write them into a copy elsewhere (label_out=<new file>)")
    lock = _lock(folder)
    try:
        clean_stale_temps(folder)
        ds = OfflineDataset.load(base, lazy=True)
        try:  # the episodes are hashed only to check them against the fingerprint the edit was made for
            E = len(ds)
            actual = content_fingerprint(ds) if expected_fingerprint is not None else None
        finally:
            ds.close()
        if expected_fingerprint is not None and actual != expected_fingerprint:
            if not os.path.samefile(base, path):  # label_out names an existing file, not a copy of this dataset
                raise DatasetError(f"label_out={out} exists and holds other episodes than {path} (dataset "
                                   f"fingerprints {actual[:16]}... and {expected_fingerprint[:16]}...): choose another "
                                   f"label_out (a new path, or an earlier copy of {path}); {out} is left as it is")
            raise _mismatch(base, expected_fingerprint, actual, f"the labels for {path}")
        tmp = temp_path(out)
        try:
            shutil.copyfile(base, tmp)
            if os.path.exists(out):
                shutil.copymode(out, tmp)  # the file replaced keeps its permissions (a private 600 stays private)
            with h5py.File(tmp, "r+") as f:
                edit(f, E)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        except BaseException:
            remove(tmp)
            raise
    finally:
        lock.release()
    return given


def write_preferences(path, name, pairs, label, attrs, expected_fingerprint, out=None, overwrite=False):
    """Store preference set `name` (see the module docstring) in dataset `path` (or a copy at `out`); `attrs`
    (JSON-able provenance) are stored as given, plus content_fingerprint, n_pairs and created. An existing set of
    that name is an error (LabelExistsError) unless overwrite=True. Returns the path written."""
    check_name(name)

    def edit(f, E):
        p, lab = _check_pairs(pairs, label, E, f"preference set '{name}'")
        root = f.require_group(GROUP)
        if name in root:
            if not overwrite:
                raise LabelExistsError(f"{out or path} already has a preference set '{name}' (made "
                                       f"{_read_attrs(root[name]).get('created', '?')}); choose another label_name "
                                       f"or set label_overwrite=True to replace it")
            del root[name]
        g = root.create_group(name)
        g.create_dataset("pairs", data=p, fletcher32=True)
        g.create_dataset("label", data=lab, fletcher32=True)
        _write_attrs(g, {**attrs, "content_fingerprint": expected_fingerprint, "n_pairs": int(len(p)),
                         "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    return edit_dataset(path, edit, expected_fingerprint, out)


def stored_attrs(path, where, name):
    """The attrs of preference set (`where` = GROUP) or label (LABELS) `name` in dataset file `path`, None when it has
    none of that name. A damaged one (its layout, or bytes failing their checksum: it is read whole) also has
    `damaged`, the DatasetError naming the edit that removes it: a labeling run never keeps it as made."""
    with h5py.File(path, "r") as f:
        if where not in f or not isinstance(f[where], h5py.Group) or name not in f[where]:
            return None
        obj, E = f[where][name], f["filled"].shape[0]
        why = set_problem(obj, E) if where == GROUP else label_problem(obj, E) or _unreadable(obj)
        try:
            attrs = _read_attrs(obj)
        except OSError:  # the object's header itself is damaged
            attrs = {}
    return {**attrs, "damaged": damaged(path, where, name, why)} if why else attrs


def _unreadable(dset):
    try:
        dset[()]
    except OSError:
        return UNREADABLE
    return None


def episode_label_attrs(path, name):
    """The provenance attrs of `labels/<name>` in dataset `path` ({} when the file has no such label)."""
    with h5py.File(path, "r") as f:
        return _read_attrs(f[LABELS][name]) if LABELS in f and name in f[LABELS] else {}


def write_episode_labels(path, labels, attrs, expected_fingerprint, out=None, overwrite=False):
    """Store per-episode arrays `labels` {name: [E, ...]} as `labels/<name>` in dataset `path` (or a copy at `out`),
    each with `attrs` (JSON-able provenance) plus content_fingerprint and created. The reader loads them as
    dataset labels (OfflineDataset.arrays()["labels/<name>"], offline_expert=label:<name>). An existing label of a
    given name is an error (LabelExistsError) unless overwrite=True. Returns the path written."""
    for name in labels:
        check_name(name, "label name")

    def edit(f, E):
        root = f.require_group(LABELS)
        for name, arr in labels.items():
            arr = np.asarray(arr)
            if arr.ndim == 0 or arr.shape[0] != E:
                raise DatasetError(f"label '{name}' has shape {arr.shape}: its first axis must be the {E} episodes")
            if name in root:
                if not overwrite:
                    raise LabelExistsError(f"{out or path} already has a label '{name}'; overwrite=True replaces it")
                del root[name]
            ds = root.create_dataset(name, data=arr, fletcher32=True)
            _write_attrs(ds, {**attrs, "content_fingerprint": expected_fingerprint,
                              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    return edit_dataset(path, edit, expected_fingerprint, out)
