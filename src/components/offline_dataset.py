"""Offline MARL datasets in HDF5 (the "Offline dataset (HDF5)" contract of DESIGN.md).

Layout (schema_version 1), episode-major, every episode padded to T+1 = episode_limit+1 steps:

    obs            [E, T+1, n, O]  float32
    state          [E, T+1, S]     float32
    actions        [E, T+1, n, 1]  int64
    avail_actions  [E, T+1, n, A]  uint8
    reward         [E, T+1, 1]     float32
    terminated     [E, T+1, 1]     uint8   a true terminal (no bootstrap) at the transition that reached it
    truncated      [E, T+1, 1]     uint8   a time-limit end at the episode's last transition (bootstrap)
    filled         [E, T+1, 1]     uint8   valid steps: 0..L for an episode of L transitions (step L holds the
                                           final obs/state/avail_actions, as the runners store it)
    episode_return [E]             float32
    agent_quality  [E, n]          uint8   codes; the mapping name -> code is the JSON attr `quality_codes`
                                           (QUALITY_CODES plus any name a writer added); 0 = "unknown"
    labels/<name>  [E, ...]        optional per-episode labels

File attrs: schema_version, complete (True only once the writer finished), env, env_args (JSON),
config (JSON), created (ISO time), n_agents, n_actions, obs_shape, state_shape, episode_limit,
n_episodes, n_transitions, n_terminated, n_truncated, truncation_as_terminal, quality_codes (JSON),
provenance (JSON list: one entry per source file of a merged dataset), compression; dropped_episodes (JSON,
only in a file written by src/drop_episodes.py: the source file and the episodes left out).

Every dataset is written with HDF5 Fletcher32 checksums (per chunk), so changed bytes fail to read instead of
being trained on; files written before checksums (same schema_version) still load, unchecked. On load the content
is validated too (components/dataset_checks.py): in memory, everything once; lazily, each read of episodes.

A writer writes to a temporary file in the target folder and renames it to the target only when it closes
without error; on an exception the temporary file is removed. Resuming an interrupted collection is not
supported: an interrupted write is discarded (a process killed outright leaves its temporary file behind, named
after its writer (utils.files.temp_path); the next writer in that folder deletes it once that process is gone,
and readers refuse it: it is never at the target path and has no `complete` attr).
"""
import json
import math
import os
from datetime import datetime, timezone

import h5py
import numpy as np
import torch as th

from components.dataset_checks import DatasetError, check_content, invalid_episodes, read, read_salvage
from components.episode_buffer import EpisodeBatch, episode_scheme
from utils.files import clean_stale_temps, is_temp, temp_path

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
QUALITY_CODES = {"unknown": 0, "random": 1, "poor": 2, "medium": 3, "expert": 4}
# field -> (stored dtype, shape after [E, T+1] as a function of the env info)
TRANSITION_FIELDS = {
    "obs": (np.float32, lambda i: (i["n_agents"], i["obs_shape"])),
    "state": (np.float32, lambda i: (i["state_shape"],)),
    "actions": (np.int64, lambda i: (i["n_agents"], 1)),
    "avail_actions": (np.uint8, lambda i: (i["n_agents"], i["n_actions"])),
    "reward": (np.float32, lambda i: (1,)),
    "terminated": (np.uint8, lambda i: (1,)),
    "truncated": (np.uint8, lambda i: (1,)),
    "filled": (np.uint8, lambda i: (1,)),
}
EPISODE_FIELDS = ("episode_return", "agent_quality")
ENV_INFO_KEYS = ("n_agents", "n_actions", "obs_shape", "state_shape", "episode_limit")


def _json(obj):
    return json.dumps(obj, sort_keys=True, default=str)


def _as_int(v):
    return int(np.prod(v)) if isinstance(v, (tuple, list)) else int(v)


def _env_info(info):
    return {k: _as_int(info[k]) for k in ENV_INFO_KEYS}


def _chunk_episodes(info, target_bytes=1 << 20):
    per_episode = sum(np.dtype(dt).itemsize * math.prod(shape(info)) for dt, shape in TRANSITION_FIELDS.values())
    return int(max(1, min(256, target_bytes // (per_episode * (info["episode_limit"] + 1)))))


def derive_truncated(terminated, filled):
    """[B, T+1, 1] truncation flags: 1 at the last transition (index L-1, L = filled steps - 1) of each episode
    that did not end with a terminal. The runners end an episode without a terminal only at a time limit
    (step_outcome), so such an end is a truncation."""
    terminated, filled = np.asarray(terminated), np.asarray(filled)
    out = np.zeros(terminated.shape, dtype=np.uint8)
    lengths = filled.reshape(filled.shape[0], -1).sum(1).astype(np.int64) - 1
    for b, L in enumerate(lengths):
        if L >= 1 and not terminated[b, :L].any():
            out[b, L - 1] = 1
    return out


class DatasetWriter:
    """Appends episodes to a new dataset file; a context manager.

        with DatasetWriter(path, env_info, "lbf", env_args, config) as w:
            w.add(batch, qualities=["expert", "random"])

    `add` takes an EpisodeBatch (or `add_arrays` a dict of arrays [B, <=T+1, ...]); per-episode returns
    default to the sum of rewards; qualities are one name, one name per agent, or names [B, n]; `truncated`
    overrides the derived flags (needed when the data was collected with truncation_as_terminal=True, where
    time-limit ends are stored as terminals and cannot be told apart afterwards)."""

    def __init__(self, path, env_info, env_name, env_args, config=None, compression="lzf", progress=None,
                 chunk_episodes=None, provenance=None, quality_codes=None, attrs=None):
        self.path = os.fspath(path)
        self.info = _env_info(env_info)
        self.T1 = self.info["episode_limit"] + 1
        self.env_name, self.env_args, self.config = env_name, dict(env_args or {}), dict(config or {})
        self.compression = compression
        self.chunk = chunk_episodes or _chunk_episodes(self.info)
        self.quality_codes = dict(QUALITY_CODES if quality_codes is None else quality_codes)
        self.provenance = provenance
        self.extra_attrs = dict(attrs or {})
        self.progress_total = progress
        self._pending, self._n_pending = [], 0
        self.n_episodes = 0
        self._file = None
        self._tmp = None
        self._bar = None
        self._label_names = None

    # ----- context -----
    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        clean_stale_temps(folder)  # files of writers killed mid-write
        self._tmp = temp_path(self.path)  # names this process, so a later run can tell a dead writer's litter
        self._file = h5py.File(self._tmp, "x")
        self._file.attrs["complete"] = False
        self._file.attrs["schema_version"] = SCHEMA_VERSION
        kw = self._dataset_kw()
        for key, (dtype, shape) in TRANSITION_FIELDS.items():
            tail = (self.T1, *shape(self.info))
            self._file.create_dataset(key, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                                      chunks=(self.chunk, *tail), **kw)
        self._file.create_dataset("episode_return", shape=(0,), maxshape=(None,), dtype=np.float32,
                                  chunks=(4096,), **kw)
        n = self.info["n_agents"]
        self._file.create_dataset("agent_quality", shape=(0, n), maxshape=(None, n), dtype=np.uint8,
                                  chunks=(4096, n), **kw)
        if self.progress_total is not None:
            from tqdm import tqdm
            self._bar = tqdm(total=self.progress_total, desc=f"writing {os.path.basename(self.path)}",
                             unit="ep")
        return self

    def _dataset_kw(self):
        return {"fletcher32": True, **({"compression": self.compression} if self.compression else {})}

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def abort(self):
        """Discard everything written: the target path is never created."""
        if self._bar is not None:
            self._bar.close()
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
        if self._tmp is not None and os.path.exists(self._tmp):
            os.remove(self._tmp)
        self._tmp = None

    def close(self):
        if self._file is None:
            raise RuntimeError("the writer is not open (use it as a context manager)")
        try:
            self._flush()
            f = self._file
            terminated, truncated = f.attrs.get("n_terminated", 0), f.attrs.get("n_truncated", 0)
            attrs = {
                "env": self.env_name, "env_args": _json(self.env_args), "config": _json(self.config),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "n_episodes": self.n_episodes, "quality_codes": _json(self.quality_codes),
                "truncation_as_terminal": bool(self.config.get("truncation_as_terminal", False)),
                "provenance": _json(self.provenance if self.provenance is not None
                                    else [{"file": os.path.basename(self.path), "env": self.env_name,
                                           "n_episodes": self.n_episodes}]),
                "compression": str(self.compression), "n_terminated": int(terminated),
                "n_truncated": int(truncated), **self.extra_attrs, **self.info,
            }
            for k, v in attrs.items():
                f.attrs[k] = v
            f.attrs["n_transitions"] = int(f.attrs.get("n_transitions", 0))
            f.attrs["complete"] = True
            f.close()
            self._file = None
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise
        finally:
            if self._bar is not None:
                self._bar.close()

    # ----- adding -----
    def add(self, batch, qualities=None, returns=None, truncated=None, labels=None):
        """Append the episodes of an EpisodeBatch."""
        arrays = {k: batch[k].detach().cpu().numpy() for k in TRANSITION_FIELDS if k != "truncated"}
        if truncated is not None:
            arrays["truncated"] = truncated
        self.add_arrays(arrays, qualities=qualities, returns=returns, labels=labels)

    def add_arrays(self, arrays, qualities=None, returns=None, labels=None):
        """Append episodes from arrays {field: [B, t<=T+1, ...]} (missing steps are padding).
        `arrays["truncated"]` may be per step [B, t, 1] or per episode [B] (then put at the last transition)."""
        filled = np.asarray(arrays["filled"])
        B, t = filled.shape[0], filled.shape[1]
        if t > self.T1:
            raise ValueError(f"episodes of {t} steps are longer than episode_limit+1 = {self.T1}")
        lengths = filled.reshape(B, -1).sum(1).astype(np.int64) - 1
        if (lengths < 1).any():
            raise ValueError(f"episode(s) {np.flatnonzero(lengths < 1).tolist()} have no transition")
        out = {}
        for key, (dtype, shape) in TRANSITION_FIELDS.items():
            want = (B, self.T1, *shape(self.info))
            if key == "truncated":
                continue
            if key not in arrays:
                raise KeyError(f"missing field '{key}'")
            a = np.asarray(arrays[key])
            if a.shape[0] != B or a.shape[2:] != want[2:]:
                raise ValueError(f"field '{key}' has shape {a.shape}, expected {want} (or fewer steps)")
            padded = np.zeros(want, dtype=dtype)
            padded[:, :t] = a
            out[key] = padded
        tr = arrays.get("truncated")
        if tr is None:
            out["truncated"] = derive_truncated(out["terminated"], out["filled"])
        else:
            tr = np.asarray(tr)
            if tr.ndim == 1:
                flags = np.zeros((B, self.T1, 1), dtype=np.uint8)
                flags[np.arange(B), lengths - 1, 0] = tr.astype(np.uint8)
                out["truncated"] = flags
            else:
                flags = np.zeros((B, self.T1, 1), dtype=np.uint8)
                flags[:, :tr.shape[1]] = tr.reshape(B, tr.shape[1], 1)
                out["truncated"] = flags
        out["episode_return"] = (out["reward"].reshape(B, -1).sum(1) if returns is None
                                 else np.asarray(returns, dtype=np.float32).reshape(B)).astype(np.float32)
        out["agent_quality"] = self._quality_codes(qualities, B)
        names = sorted(labels) if labels else []
        if self._label_names is None:
            self._label_names = names
        elif names != self._label_names:
            raise ValueError(f"labels {names} differ from the labels of earlier episodes {self._label_names}")
        for name in names:
            lab = np.asarray(labels[name])
            if lab.shape[0] != B:
                raise ValueError(f"label '{name}' has {lab.shape[0]} rows for {B} episodes")
            out["labels/" + name] = lab
        self._pending.append(out)
        self._n_pending += B
        if self._n_pending >= self.chunk:
            self._flush()
        if self._bar is not None:
            self._bar.update(B)

    def _quality_codes(self, qualities, B):
        n = self.info["n_agents"]
        if qualities is None:
            qualities = "unknown"
        q = np.asarray(qualities)
        if q.dtype.kind in "iu":
            return np.broadcast_to(q, (B, n)).astype(np.uint8)
        q = np.broadcast_to(q.astype(str), (B, n))
        codes = np.zeros((B, n), dtype=np.uint8)
        for name in np.unique(q):
            if name not in self.quality_codes:
                self.quality_codes[name] = max(self.quality_codes.values()) + 1
            codes[q == name] = self.quality_codes[name]
        return codes

    def _flush(self):
        if not self._pending:
            return
        f = self._file
        keys = self._pending[0].keys()
        data = {k: np.concatenate([p[k] for p in self._pending]) for k in keys}
        self._pending, self._n_pending = [], 0
        B = data["filled"].shape[0]
        start = self.n_episodes
        for k, v in data.items():
            if k not in f:  # a label, created on first write
                f.create_dataset(k, data=v, maxshape=(None, *v.shape[1:]), chunks=True, **self._dataset_kw())
                continue
            f[k].resize(start + B, axis=0)
            f[k][start:start + B] = v
        self.n_episodes += B
        f.attrs["n_transitions"] = int(f.attrs.get("n_transitions", 0)) + int(data["filled"].sum() - B)
        f.attrs["n_terminated"] = int(f.attrs.get("n_terminated", 0)) + int(data["terminated"].sum())
        f.attrs["n_truncated"] = int(f.attrs.get("n_truncated", 0)) + int(data["truncated"].sum())


def _open_h5(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"offline dataset {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file (truncated or corrupted?): {e}") from e


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
    if "labels" in f:
        for name, ds in f["labels"].items():
            if ds.shape[0] != E:
                raise DatasetError(f"{path}: 'labels/{name}' has {ds.shape[0]} rows, expected {E}")
    if expect_env is not None:
        check_env(attrs["env"], json.loads(attrs["env_args"]), expect_env, path)
    return info


def _attrs(f):
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}


def load_salvage(path):
    """(dataset in memory, unreadable [E] bool, invalid [E] bool) of a file that may fail to load: episodes in
    chunks that fail their checksum are zeros and marked unreadable; invalid ones fail the content checks.
    For src/drop_episodes.py: the attrs and layout must still be sound."""
    path = os.fspath(path)
    with _open_h5(path) as f:
        _validate(f, path)
        attrs = _attrs(f)
        unreadable = np.zeros(f["filled"].shape[0], dtype=bool)
        arrays = {}
        keys = [*TRANSITION_FIELDS, *EPISODE_FIELDS] + (["labels/" + k for k in f["labels"]] if "labels" in f else [])
        for k in keys:
            arrays[k], bad = read_salvage(f[k])
            unreadable |= bad
    invalid = invalid_episodes(arrays, int(attrs["n_actions"]), bool(attrs.get("truncation_as_terminal")))
    codes = json.loads(attrs.get("quality_codes", _json(QUALITY_CODES)))
    ds = OfflineDataset._from_arrays(arrays, attrs, codes)
    ds.path = path
    return ds, unreadable, invalid & ~unreadable


def check_env(env, env_args, expect_env, where):
    name, subset = (expect_env, {}) if isinstance(expect_env, str) else expect_env
    if name is not None and env != name:
        raise DatasetError(f"{where}: dataset env is '{env}', expected '{name}'")
    for k, v in (subset or {}).items():
        if k not in env_args:
            raise DatasetError(f"{where}: env_args has no '{k}' (expected {v!r})")
        if env_args[k] != v:
            raise DatasetError(f"{where}: env_args['{k}'] is {env_args[k]!r}, expected {v!r}")


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
            labels_src = dict(f["labels"].items()) if "labels" in f else {}
            if lazy:
                data, labels = {k: f[k] for k in TRANSITION_FIELDS}, labels_src
            else:
                data = {k: read(f[k], path) for k in TRANSITION_FIELDS}
                labels = {k: read(v, path) for k, v in labels_src.items()}
                check_content(data, int(attrs["n_actions"]), path, bool(attrs.get("truncation_as_terminal")))
            ret, qual = read(f["episode_return"], path), read(f["agent_quality"], path)
        except BaseException:
            f.close()
            raise
        if not lazy:
            f.close()
        ds = cls(data, ret, qual, labels, attrs, json.loads(attrs.get("quality_codes", _json(QUALITY_CODES))),
                 file=f if lazy else None)
        ds.path = path
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

    @property
    def label_names(self):
        return sorted(self._labels)

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

    def arrays(self, rows=None):
        """{field: np.ndarray} for the given rows (default all), transition fields, episode fields, labels."""
        rows = np.arange(len(self)) if rows is None else rows
        out = {k: self._rows(v, rows) for k, v in self._data.items()}
        if self.lazy:
            check_content(out, self.env_info["n_actions"], self._file.filename,
                          bool(self.attrs.get("truncation_as_terminal")), episodes=self._index[rows])
        out["episode_return"] = self._returns_all[self._index[rows]]
        out["agent_quality"] = self._quality_all[self._index[rows]]
        for k, v in self._labels.items():
            out["labels/" + k] = self._rows(v, rows)
        return out

    def subset(self, rows):
        """A dataset of the given rows (sharing the arrays or the open file)."""
        return OfflineDataset(self._data, self._returns_all, self._quality_all, self._labels, dict(self.attrs),
                              self.quality_codes, index=self._index[np.asarray(rows, dtype=np.int64)],
                              file=self._file)

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
        Quality codes are remapped by name; the provenance lists both sources."""
        if self.attrs["env"] != other.attrs["env"]:
            raise DatasetError(f"cannot merge datasets of envs '{self.attrs['env']}' and '{other.attrs['env']}'")
        a_args, b_args = json.loads(self.attrs["env_args"]), json.loads(other.attrs["env_args"])
        a_args.pop("seed", None)
        b_args.pop("seed", None)
        if a_args != b_args:
            raise DatasetError(f"cannot merge datasets with different env_args: {a_args} vs {b_args}")
        if self.env_info != other.env_info:
            raise DatasetError(f"cannot merge datasets of different shapes: {self.env_info} vs {other.env_info}")
        if self.label_names != other.label_names:
            raise DatasetError(f"cannot merge datasets with different labels: {self.label_names} vs "
                               f"{other.label_names}")
        a, b = self.arrays(), other.arrays()
        codes = dict(self.quality_codes)
        remap = np.zeros(256, dtype=np.uint8)
        for name, c in other.quality_codes.items():
            if name not in codes:
                codes[name] = max(codes.values()) + 1
            remap[c] = codes[name]
        b["agent_quality"] = remap[b["agent_quality"]]
        merged = {k: np.concatenate([a[k], b[k]]) for k in a}
        attrs = dict(self.attrs)
        attrs["provenance"] = _json(json.loads(self.attrs.get("provenance", "[]"))
                                    + json.loads(other.attrs.get("provenance", "[]")))
        attrs["quality_codes"] = _json(codes)
        return OfflineDataset._from_arrays(merged, attrs, codes)

    @classmethod
    def _from_arrays(cls, arrays, attrs, quality_codes):
        data = {k: arrays[k] for k in TRANSITION_FIELDS}
        labels = {k[len("labels/"):]: v for k, v in arrays.items() if k.startswith("labels/")}
        return cls(data, arrays["episode_return"], arrays["agent_quality"], labels, attrs, quality_codes)

    def save(self, path, compression="lzf", progress=False, attrs=None):
        """Write this dataset (e.g. a merge or a top fraction) to a new file; `attrs`: extra file attrs."""
        config = json.loads(self.attrs.get("config", "{}"))
        names = {v: k for k, v in self.quality_codes.items()}
        with DatasetWriter(path, self.env_info, self.attrs["env"], json.loads(self.attrs["env_args"]), config,
                           compression=compression, progress=len(self) if progress else None,
                           provenance=json.loads(self.attrs.get("provenance", "[]")),
                           quality_codes=self.quality_codes, attrs=attrs) as w:
            step = 1024
            for start in range(0, len(self), step):
                rows = np.arange(start, min(len(self), start + step))
                arr = self.arrays(rows)
                labels = {k[len("labels/"):]: v for k, v in arr.items() if k.startswith("labels/")}
                q = np.vectorize(lambda c: names.get(int(c), "unknown"))(arr["agent_quality"])
                w.add_arrays(arr, qualities=q, returns=arr["episode_return"], labels=labels or None)

    # ----- batches for learners -----
    def scheme(self):
        """(scheme, groups, preprocess) as the online runs build them, plus `truncated`."""
        return episode_scheme(self.env_info, {"truncated": {"vshape": (1,), "dtype": th.uint8}})

    def episode_batch(self, rows, device="cpu"):
        """An EpisodeBatch of the given rows (with actions_onehot), as a learner's buffer.sample returns."""
        scheme, groups, preprocess = self.scheme()
        arr = self.arrays(rows)
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
