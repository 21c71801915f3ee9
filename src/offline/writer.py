"""Writing offline datasets (the format: offline/format.py): `DatasetWriter` appends episodes to a new file,
written to a temporary file and renamed to the target only when complete."""
import math
import os
from datetime import datetime, timezone

import h5py
import numpy as np

from offline.format import QUALITY_CODES, SCHEMA_VERSION, TRANSITION_FIELDS, env_info_of, to_json
from utils.files import clean_stale_temps, temp_path
from utils.progress import Bar


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
        self.info = env_info_of(env_info)
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
        if self.progress_total is not None:  # a bar on a terminal only (utils.progress)
            self._bar = Bar(self.progress_total, desc=f"writing {os.path.basename(self.path)}", unit="episode")
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
                "env": self.env_name, "env_args": to_json(self.env_args), "config": to_json(self.config),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "n_episodes": self.n_episodes, "quality_codes": to_json(self.quality_codes),
                "truncation_as_terminal": bool(self.config.get("truncation_as_terminal", False)),
                "provenance": to_json(self.provenance if self.provenance is not None
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
