"""Reading offline datasets (the format: offline/format.py): `OfflineDataset.load` checks the schema version,
the layout and the content and says what is wrong; views (subsets, splits, merges) and EpisodeBatches for
learners."""
import json
import math
import os
import warnings

import h5py
import numpy as np
import torch as th

from components.episode_buffer import EpisodeBatch, episode_scheme
from offline.checks import _ranges, check_content, drop_command, invalid_episodes, read, read_salvage
from offline.format import (
    ENV_INFO_KEYS,
    EPISODE_FIELDS,
    QUALITY_CODES,
    SUPPORTED_SCHEMA_VERSIONS,
    TRANSITION_FIELDS,
    DatasetError,
    check_env,
    missing_dataset,
    to_json,
)
from offline.label_store import GROUP as PREFERENCES
from offline.label_store import (
    LABELS,
    UNREADABLE,
    check_groups,
    damaged,
    edit_command,
    episode_label_attrs,
    label_command,
    label_problem,
)
from offline.writer import DatasetWriter
from utils.files import is_temp, sha256_file


def _open_h5(path):
    if not os.path.exists(path):
        raise missing_dataset(f"offline dataset {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        error = DatasetError(f"{path}: not a readable HDF5 file (truncated or corrupted?): {e}")
        error.repeats_on_retry = False  # an OSError may be passing (a network disk); a retry costs one failed open
        raise error from e


def _validate(f, path, expect_env=None):
    attrs = dict(f.attrs)
    if "schema_version" not in attrs:
        raise DatasetError(f"{path}: no schema_version attr; not an offline dataset of this project")
    version = int(attrs["schema_version"])
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise DatasetError(f"{path}: schema_version {version} is not supported (supported: "
                           f"{list(SUPPORTED_SCHEMA_VERSIONS)})")
    if not bool(attrs.get("complete", False)):
        raise DatasetError(f"{path}: the 'complete' attr is missing or False: the writer did not finish "
                           f"(an interrupted or partial file)")
    missing = [k for k in (*ENV_INFO_KEYS, "env", "env_args") if k not in attrs]
    if missing:
        raise DatasetError(f"{path}: missing attrs {missing}")
    missing = [k for k in (*TRANSITION_FIELDS, *EPISODE_FIELDS) if k not in f]
    if missing:
        raise DatasetError(f"{path}: missing dataset key(s) {missing}")
    info = {k: int(attrs[k]) for k in ENV_INFO_KEYS}
    E = f["filled"].shape[0]
    for key, (_, shape) in TRANSITION_FIELDS.items():
        want = (E, info["episode_limit"] + 1, *shape(info))
        if f[key].shape != want:
            raise DatasetError(f"{path}: '{key}' has shape {f[key].shape}, expected {want} (from 'filled' and the "
                               f"attrs n_agents/n_actions/obs_shape/state_shape/episode_limit)")
    for key, want in (("episode_return", (E,)), ("agent_quality", (E, info["n_agents"]))):
        if f[key].shape != want:
            raise DatasetError(f"{path}: '{key}' has shape {f[key].shape}, expected {want}")
    if LABELS in f and not isinstance(f[LABELS], h5py.Group):
        raise DatasetError(f"{path}: 'labels' is not a group of per-episode labels; drop it or copy the episodes "
                           f"into a new file ({drop_command(path)})")
    check_groups(f, path)  # each preference set is checked where it is used
    if expect_env is not None:
        check_env(attrs["env"], json.loads(attrs["env_args"]), expect_env, path)
    return info


def _labels(f, path):
    """({name: h5py.Dataset} of file `path`'s sound labels, {name: (path, what is wrong)} of its damaged ones): a
    damaged label fails only where it is used (OfflineDataset.label)."""
    E = f["filled"].shape[0]
    sound, bad = {}, {}
    for name, obj in (f[LABELS].items() if LABELS in f else ()):
        why = label_problem(obj, E)
        if why:
            bad[name] = (path, why)
        else:
            sound[name] = obj
    return sound, bad


def dataset_fingerprint(path):
    """What identifies a dataset file that a run trained on: its absolute path, size, SHA-256 of its bytes (read in
    blocks: about 1 s per GB), episode count and creation time (attrs). Recorded in an offline run's Sacred info."""
    path = os.path.abspath(os.fspath(path))
    with _open_h5(path) as f:
        episodes, created = int(f.attrs.get("n_episodes", -1)), str(f.attrs.get("created", ""))
    return {"path": path, "bytes": os.path.getsize(path), "sha256": sha256_file(path), "episodes": episodes,
            "created": created}


def _attrs(f):
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}


def load_salvage(path):
    """(dataset in memory, unreadable [E] bool, invalid [E] bool) of a file that may fail to load: episodes in
    chunks that fail their checksum are zeros and marked unreadable; invalid ones fail the content checks.
    For scripts/drop_episodes.py: the attrs and layout must still be sound."""
    path = os.fspath(path)
    with _open_h5(path) as f:
        _validate(f, path)
        attrs = _attrs(f)
        unreadable = np.zeros(f["filled"].shape[0], dtype=bool)
        arrays = {}
        labels, damaged_labels = _labels(f, path)
        keys = [*TRANSITION_FIELDS, *EPISODE_FIELDS] + ["labels/" + k for k in labels]
        for k in keys:
            arrays[k], bad = read_salvage(f[k])
            unreadable |= bad
        preference_sets = sorted(f[PREFERENCES]) if PREFERENCES in f else []
    invalid = invalid_episodes(arrays, int(attrs["n_actions"]), bool(attrs.get("truncation_as_terminal")))
    codes = json.loads(attrs.get("quality_codes", to_json(QUALITY_CODES)))
    ds = OfflineDataset._from_arrays(arrays, attrs, codes)
    ds.path = ds.source_path = path
    ds.preference_sets, ds.damaged_labels = preference_sets, damaged_labels  # save() names what it leaves out
    return ds, unreadable, invalid & ~unreadable


class OfflineDataset:
    """A dataset read from one file (in memory, or lazily from the open file), or derived from others
    (subsets and merges are in memory, except subsets of a lazy dataset, which stay lazy)."""

    def __init__(self, data, episode_return, agent_quality, labels, attrs, quality_codes, index=None, file=None):
        self._data = data            # field -> np.ndarray or h5py.Dataset, all episodes of the source
        self._labels = labels        # name -> same
        self._returns_all = np.asarray(episode_return, dtype=np.float32)
        self._quality_all = np.asarray(agent_quality)
        self.attrs = attrs
        self.quality_codes = quality_codes
        self._index = np.arange(len(self._returns_all)) if index is None else np.asarray(index, dtype=np.int64)
        self._file = file
        self.env_info = {k: int(attrs[k]) for k in ENV_INFO_KEYS}
        # names of the file's preference sets (offline/label_store.py): never carried into a derived file, where
        # their pair indices would name other episodes; save() says so
        self.preference_sets = []
        # damaged labels, name -> (the file they are damaged in, what is wrong): not among label_names; label(name)
        # says so. A lazy view adds a label whose stored bytes fail their checksum when it reads them (_read_label).
        self.damaged_labels = {}
        self.path = None  # the file, for a dataset loaded from one (not for its subsets or merges)
        self.source_path = None  # the file this view's episodes come from (a loaded dataset and its subsets)

    # ----- loading -----
    @classmethod
    def load(cls, path, lazy=False, expect_env=None):
        """Checksum failures and invalid content raise a DatasetError naming the field and the episodes.
        In memory, the whole content is validated here; lazily, each read of episodes is (a pass at open would
        read the whole file, which lazy loading exists to avoid)."""
        path = os.fspath(path)
        if is_temp(path):
            raise DatasetError(f"{path} is an unfinished write (a temporary file of a writer that did not complete); "
                               f"load the finished dataset, or collect it again")
        f = _open_h5(path)
        try:
            _validate(f, path, expect_env)
            attrs = _attrs(f)
            labels, damaged_labels = _labels(f, path)
            if lazy:
                data = {k: f[k] for k in TRANSITION_FIELDS}
            else:
                data = {k: read(f[k], path) for k in TRANSITION_FIELDS}
                for k, v in list(labels.items()):
                    try:
                        labels[k] = read(v, path)
                    except DatasetError:
                        damaged_labels[k] = (path, UNREADABLE)
                        del labels[k]
                check_content(data, int(attrs["n_actions"]), path, bool(attrs.get("truncation_as_terminal")))
            ret, qual = read(f["episode_return"], path), read(f["agent_quality"], path)
            if not np.isfinite(ret).all():  # read whole in both modes: checked here (offline/checks.py's rule)
                bad = np.flatnonzero(~np.isfinite(ret))
                raise DatasetError(f"{path}: 'episode_return' is not finite (NaN or inf) at episode(s) "
                                   f"{_ranges(bad[:50])}{', ...' if len(bad) > 50 else ''} ({len(bad)} of {len(ret)}): "
                                   f"such an episode ranks and labels as a tie with every other; drop them into a "
                                   f"new file (the original is kept) with: {drop_command(path)}")
            preference_sets = sorted(f[PREFERENCES]) if PREFERENCES in f else []
        except BaseException:
            f.close()
            raise
        if not lazy:
            f.close()
        ds = cls(data, ret, qual, labels, attrs, json.loads(attrs.get("quality_codes", to_json(QUALITY_CODES))),
                 file=f if lazy else None)
        ds.path = ds.source_path = path
        ds.preference_sets, ds.damaged_labels = preference_sets, damaged_labels
        return ds

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    # ----- views -----
    def __len__(self):
        return len(self._index)

    @property
    def lazy(self):
        return self._file is not None

    @property
    def returns(self):
        return self._returns_all[self._index]

    @property
    def quality_code_array(self):
        return self._quality_all[self._index]

    @property
    def qualities(self):
        names = {v: k for k, v in self.quality_codes.items()}
        codes = self.quality_code_array
        out = np.empty(codes.shape, dtype=object)
        for c in np.unique(codes):
            out[codes == c] = names.get(int(c), "unknown")
        return out.astype(str)

    def one_expert_agent(self, rows=None):
        """[len(rows)] int64 (default all episodes): the index of each episode's one expert agent (agent_quality),
        -1 where it has none or several (CODI's one-expert data: the agent_quality oracle, codi_privileged)."""
        codes = self.quality_code_array if rows is None else self.quality_code_array[np.asarray(rows, np.int64)]
        expert = self.quality_codes.get("expert")
        if expert is None:
            return np.full(len(codes), -1, dtype=np.int64)
        is_expert = codes == expert
        return np.where(is_expert.sum(1) == 1, is_expert.argmax(1), -1).astype(np.int64)

    @property
    def label_names(self):
        """The labels this view can read (its damaged ones are in damaged_labels)."""
        return sorted(n for n in self._labels if n not in self.damaged_labels)

    def label_attrs(self, name):
        """The provenance attrs stored with labels/<name> in this dataset's file ({} for a dataset not read from a
        file, or a label without attrs)."""
        return episode_label_attrs(self.path, name) if self.path and name in self._labels else {}

    def label(self, name):
        """The per-episode label `labels/<name>` for this view's episodes, in their order; a damaged label (in
        `damaged_labels`, or failing its checksum when read lazily) is an error naming the edit that removes it."""
        if name not in self.damaged_labels:
            values = self._read_label(name, np.arange(len(self)))
            if values is not None:
                return values
        path, why = self.damaged_labels[name]
        raise damaged(path, LABELS, name, why)

    def _read_label(self, name, rows):
        """labels/<name> at `rows`; None when a lazy read fails its checksum, which records the label in
        damaged_labels (where it is used, label(name) names the edit that removes it)."""
        try:
            return self._rows(self._labels[name], rows)
        except DatasetError:
            if not self.lazy:
                raise
            self.damaged_labels[name] = (self.source_path, UNREADABLE)
            return None

    def with_reward(self, reward):
        """This view with its per-step rewards replaced by `reward` [len, T+1, 1] (offline_reward=label:<name>,
        e.g. MARL-SL's recovered rewards); episode_return keeps the ground truth (reported, never trained on)."""
        reward = np.asarray(reward, dtype=np.float32)
        want = (len(self), self.env_info["episode_limit"] + 1, 1)
        if reward.shape != want:
            raise DatasetError(f"a reward label must have shape {want} ([episodes, episode_limit + 1, 1]), got "
                               f"{reward.shape}")
        if not np.isfinite(reward).all():
            raise DatasetError(f"the reward label has {int((~np.isfinite(reward)).sum())} non-finite values")
        full = np.zeros((len(self._returns_all), *want[1:]), dtype=np.float32)
        full[self._index] = reward
        ds = OfflineDataset({**self._data, "reward": full}, self._returns_all, self._quality_all, self._labels,
                            dict(self.attrs), self.quality_codes, index=self._index, file=self._file)
        ds.path = getattr(self, "path", None)
        ds.source_path, ds.damaged_labels = self.source_path, dict(self.damaged_labels)
        return ds

    def reward_returns(self):
        """[len] float64: each episode's sum of its stored per-step rewards (zero on padding): with a reward label
        (with_reward) the label's returns, where `returns` keeps the ground truth. Reads the reward field."""
        reward = self._rows(self._data["reward"], np.arange(len(self)))
        return reward.reshape(len(self), -1).sum(axis=1, dtype=np.float64)

    def _rows(self, source, rows):
        """Rows `rows` (indices into this dataset) of a source array, in the given order."""
        idx = self._index[np.asarray(rows, dtype=np.int64)]
        if isinstance(source, np.ndarray):
            return source[idx]
        order = np.argsort(idx, kind="stable")
        uniq, inverse = np.unique(idx[order], return_inverse=True)
        block = read(source, self._file.filename, uniq)  # h5py fancy indexing needs increasing, unique indices
        out = np.empty((len(idx), *block.shape[1:]), dtype=block.dtype)
        out[order] = block[inverse]
        return out

    def arrays(self, rows=None, labels=True):
        """{field: np.ndarray} for the given rows (default all), transition fields, episode fields, and the labels
        (as "labels/<name>") unless labels=False."""
        rows = np.arange(len(self)) if rows is None else rows
        out = {k: self._rows(v, rows) for k, v in self._data.items()}
        if self.lazy:
            check_content(out, self.env_info["n_actions"], self._file.filename,
                          bool(self.attrs.get("truncation_as_terminal")), episodes=self._index[rows])
        out["episode_return"] = self._returns_all[self._index[rows]]
        out["agent_quality"] = self._quality_all[self._index[rows]]
        for name in (self.label_names if labels else ()):
            values = self._read_label(name, rows)
            if values is not None:
                out["labels/" + name] = values
        return out

    def positions_of(self, other):
        """The positions in this view of the episodes of `other` that it holds, ascending, when `other` is a view of
        the same arrays (a subset, split or top fraction of this dataset or of the same parent); None when it is not
        (another file)."""
        if other._data is not self._data:
            return None
        return np.flatnonzero(np.isin(self._index, other._index))

    def subset(self, rows):
        """A dataset of the given rows (sharing the arrays or the open file)."""
        ds = OfflineDataset(self._data, self._returns_all, self._quality_all, self._labels, dict(self.attrs),
                            self.quality_codes, index=self._index[np.asarray(rows, dtype=np.int64)],
                            file=self._file)
        ds.source_path, ds.preference_sets = self.source_path, list(self.preference_sets)
        ds.damaged_labels = dict(self.damaged_labels)
        return ds

    def top_fraction(self, fraction):
        """The episodes whose return is in the top `fraction` (at least one), in their original order."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        k = max(1, int(math.ceil(fraction * len(self))))
        top = np.argsort(-self.returns, kind="stable")[:k]
        return self.subset(np.sort(top))

    def split(self, valid_fraction, seed=0):
        """(train, valid): a random split with round(valid_fraction * len) validation episodes."""
        if not 0 <= valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
        perm = np.random.default_rng(seed).permutation(len(self))
        n_valid = int(round(valid_fraction * len(self)))
        return self.subset(np.sort(perm[n_valid:])), self.subset(np.sort(perm[:n_valid]))

    def merge(self, other):
        """A new in-memory dataset: this one's episodes then `other`'s (same env, env_args and shapes).
        Quality codes are remapped by name; the provenance lists both sources. Labels both can read are kept; the
        labels either has damaged stay damaged (damaged_labels: label(name) names the file and the edit); the others
        are dropped with a warning naming them (also in the attr `dropped_labels`)."""
        if self.attrs["env"] != other.attrs["env"]:
            raise DatasetError(f"cannot merge datasets of envs '{self.attrs['env']}' and '{other.attrs['env']}'")
        a_args, b_args = json.loads(self.attrs["env_args"]), json.loads(other.attrs["env_args"])
        a_args.pop("seed", None)
        b_args.pop("seed", None)
        if a_args != b_args:
            raise DatasetError(f"cannot merge datasets with different env_args: {a_args} vs {b_args}")
        if self.env_info != other.env_info:
            raise DatasetError(f"cannot merge datasets of different shapes: {self.env_info} vs {other.env_info}")
        a, b = self.arrays(), other.arrays()  # first: a lazy read that fails a label's checksum marks it damaged
        damaged_labels = {**other.damaged_labels, **self.damaged_labels}
        # labels both datasets can read are kept; the others would have no value for some episodes: dropped, by name
        kept = set(self.label_names) & set(other.label_names)
        dropped = sorted((set(self.label_names) | set(other.label_names)) - kept - set(damaged_labels))
        if dropped:
            warnings.warn(f"merging drops the labels {dropped}: only one of the datasets has them (kept: "
                          f"{sorted(kept) or 'none'})", stacklevel=2)
        for arr in (a, b):
            for key in [k for k in arr if k.startswith("labels/") and k[len("labels/"):] not in kept]:
                del arr[key]
        for key in (k for k in a if k.startswith("labels/")):
            if a[key].shape[1:] != b[key].shape[1:]:
                raise DatasetError(f"cannot merge datasets whose label '{key[len('labels/'):]}' has other shapes per "
                                   f"episode: {a[key].shape[1:]} vs {b[key].shape[1:]}")
        codes = dict(self.quality_codes)
        remap = np.zeros(256, dtype=np.uint8)
        for name, c in other.quality_codes.items():
            if name not in codes:
                codes[name] = max(codes.values()) + 1
            remap[c] = codes[name]
        b["agent_quality"] = remap[b["agent_quality"]]
        merged = {k: np.concatenate([a[k], b[k]]) for k in a}
        attrs = dict(self.attrs)
        attrs["provenance"] = to_json(json.loads(self.attrs.get("provenance", "[]"))
                                    + json.loads(other.attrs.get("provenance", "[]")))
        attrs["quality_codes"] = to_json(codes)
        if dropped:
            earlier = json.loads(self.attrs.get("dropped_labels", "[]"))
            attrs["dropped_labels"] = to_json(sorted(set(dropped) | set(earlier)))
        out = OfflineDataset._from_arrays(merged, attrs, codes)
        out.preference_sets = sorted(set(self.preference_sets) | set(other.preference_sets))
        out.damaged_labels = damaged_labels
        return out

    @classmethod
    def _from_arrays(cls, arrays, attrs, quality_codes):
        data = {k: arrays[k] for k in TRANSITION_FIELDS}
        labels = {k[len("labels/"):]: v for k, v in arrays.items() if k.startswith("labels/")}
        return cls(data, arrays["episode_return"], arrays["agent_quality"], labels, attrs, quality_codes)

    def save(self, path, compression="lzf", progress=False, attrs=None):
        """Write this dataset (e.g. a merge or a top fraction) to a new file; `attrs`: extra file attrs.
        Per-episode labels follow their episodes; preference sets are left out (with a warning naming them)."""
        if self.preference_sets:
            warnings.warn(f"the preference sets {self.preference_sets} of {self.source_path or 'the sources'} are not "
                          f"written to {path}: their pair indices name the source file's episodes. Label the new "
                          f"file again: {label_command(path)}", stacklevel=2)
        every = np.arange(len(self))
        labels = {n: v for n in self.label_names if (v := self._read_label(n, every)) is not None}  # read first: a
        # label failing its checksum is left out of every episode
        for source in sorted({p for p, _ in self.damaged_labels.values()}, key=str):
            names = sorted(n for n, (p, _) in self.damaged_labels.items() if p == source)
            warnings.warn(f"the damaged labels {names} of {source} are not written to {path} (remove them from "
                          f"{source} with: {edit_command(source, '--remove-label', ' --remove-label '.join(names))})",
                          stacklevel=2)
        config = json.loads(self.attrs.get("config", "{}"))
        names = {v: k for k, v in self.quality_codes.items()}
        with DatasetWriter(path, self.env_info, self.attrs["env"], json.loads(self.attrs["env_args"]), config,
                           compression=compression, progress=len(self) if progress else None,
                           provenance=json.loads(self.attrs.get("provenance", "[]")),
                           quality_codes=self.quality_codes, attrs=attrs) as w:
            step = 1024
            for start in range(0, len(self), step):
                rows = np.arange(start, min(len(self), start + step))
                arr = self.arrays(rows, labels=False)
                q = np.vectorize(lambda c: names.get(int(c), "unknown"))(arr["agent_quality"])
                w.add_arrays(arr, qualities=q, returns=arr["episode_return"],
                             labels={n: v[rows] for n, v in labels.items()} or None)

    # ----- batches for learners -----
    def scheme(self):
        """(scheme, groups, preprocess) as the online runs build them, plus `truncated`."""
        return episode_scheme(self.env_info, {"truncated": {"vshape": (1,), "dtype": th.uint8}})

    def episode_batch(self, rows, device="cpu"):
        """An EpisodeBatch of the given rows (with actions_onehot), as a learner's buffer.sample returns."""
        scheme, groups, preprocess = self.scheme()
        arr = self.arrays(rows, labels=False)
        batch = EpisodeBatch(scheme, groups, len(rows), self.env_info["episode_limit"] + 1,
                             preprocess=preprocess, device="cpu")
        td = batch.data.transition_data
        for k in TRANSITION_FIELDS:
            td[k].copy_(th.from_numpy(np.ascontiguousarray(arr[k])).to(td[k].dtype))
        for k, (new_k, transforms) in preprocess.items():
            out = arr[k]
            for t in transforms:
                out = t.transform_np(out)
            td[new_k].copy_(th.from_numpy(np.ascontiguousarray(out)))
        return batch.to(device) if device != "cpu" else batch

    def sample(self, batch_size, rng=None, device="cpu"):
        """`batch_size` episodes drawn without replacement (with replacement if the dataset is smaller);
        rng: a np.random.Generator, a seed, or None."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        rows = np.sort(rng.choice(len(self), size=batch_size, replace=batch_size > len(self)))
        return self.episode_batch(rows, device=device)

    def __repr__(self):
        return (f"OfflineDataset({self.attrs.get('env')}, {len(self)} episodes, "
                f"{'lazy' if self.lazy else 'in memory'})")
