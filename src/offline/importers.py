"""Importers of public offline-MARL datasets into this project's HDF5 format (offline/format.py).

OffPyMARL (zzq-bot/offline-marl-framework-offpymarl) keeps a dataset as a folder of part_<k>.h5 files (gzip),
each holding pymarl EpisodeBatch fields padded to the env's episode_limit+1 steps:

    state (N,T+1,S)  obs (N,T+1,n,O)  actions (N,T+1,n,1) int64  avail_actions (N,T+1,n,A) int32
    reward (N,T+1,1)  terminated (N,T+1,1) uint8  filled (N,T+1,1) int64  actions_onehot (N,T+1,n,A)
    corrected_terminated (N,T+1,1), only in OG-MARL conversions

What the import changes:
- `corrected_terminated` replaces `terminated` where a part has it (OffPyMARL's use_corrected_terminated).
- An episode ends at its first terminal: OffPyMARL's learners mask the steps after it, our format has none.
- `actions_onehot` is dropped (ours is derived when batches are built); dtypes become ours.
- Time limits. H = min(source horizon T, episode_limit) is the step at which the source (which pads to its
  env's episode_limit+1) or our env must end an episode. OffPyMARL stored time-limit ends of gymma envs
  (LBF, MPE) as terminals. time_limit_terminals:
    "truncate": a terminal at the last transition of an episode of H transitions becomes a truncation (so a
                real terminal at exactly step H is converted too: the data cannot tell the two apart);
    "keep":     terminals stay as stored;
    "auto":     "truncate" if at least one episode has H transitions and every such episode ends with a
                terminal (time-outs stored as terminals: correctly stored data has time-outs without one),
                else "keep".
  Every other episode end without a terminal is a truncation, as in datasets we collect.
"""
import os
import re

import h5py
import numpy as np

from offline.format import DatasetError
from offline.writer import DatasetWriter

TIME_LIMIT_MODES = ("auto", "keep", "truncate")
OFFPYMARL_KEYS = ("state", "obs", "actions", "avail_actions", "reward", "terminated", "filled")
SHAPE_KEYS = ("n_agents", "n_actions", "obs_shape", "state_shape")
CHUNK_BYTES = 64 << 20  # source bytes read per step: a 1 GB part is never loaded at once


def _natural_key(path):
    # part_2.h5 before part_10.h5
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", os.path.basename(path))]


def offpymarl_parts(sources):
    """The part files of `sources` (files, or folders whose *.h5 files are taken in natural order)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    parts = []
    for src in map(os.fspath, sources):
        if os.path.isdir(src):
            found = sorted((os.path.join(src, f) for f in os.listdir(src) if f.endswith(".h5")), key=_natural_key)
            if not found:
                raise DatasetError(f"{src}: the folder has no *.h5 part files")
            parts.extend(found)
        elif os.path.isfile(src):
            parts.append(src)
        else:
            raise DatasetError(f"{src}: no such file or folder")
    if not parts:
        raise DatasetError("no OffPyMARL sources given")
    return parts


def _open(path):
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file: {e}") from e


def _part_shapes(f, path):
    """(N, T+1, {n_agents, n_actions, obs_shape, state_shape}) of a part, with every key's shape checked."""
    missing = [k for k in OFFPYMARL_KEYS if k not in f]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing} (an OffPyMARL part has {list(OFFPYMARL_KEYS)})")
    for key, ndim in (("obs", 4), ("avail_actions", 4), ("state", 3)):
        if f[key].ndim != ndim:
            raise DatasetError(f"{path}: '{key}' has shape {f[key].shape}, expected {ndim} dims")
    N, T1 = f["filled"].shape[:2]
    n, O = f["obs"].shape[2:]
    info = {"n_agents": n, "n_actions": f["avail_actions"].shape[3], "obs_shape": O,
            "state_shape": f["state"].shape[2]}
    want = {"state": [(info["state_shape"],)], "obs": [(n, O)], "avail_actions": [(n, info["n_actions"])],
            "actions": [(n, 1), (n,)]}
    for key in (*OFFPYMARL_KEYS, "corrected_terminated"):
        tails = want.get(key, [(1,), ()])  # scalars may come without their trailing 1
        if key in f and f[key].shape not in [(N, T1, *t) for t in tails]:
            raise DatasetError(f"{path}: '{key}' has shape {f[key].shape}, expected {(N, T1, *tails[0])} "
                               f"(from 'filled' {f['filled'].shape} and 'obs' {f['obs'].shape})")
    return N, T1, info


def _episode_ends(f, key, path):
    """(L, terminal): transitions per episode, cut after the first terminal, and whether it ends with one."""
    filled = f["filled"][()].reshape(f["filled"].shape[:2])  # small: one number per step
    term = f[key][()].reshape(filled.shape).astype(bool)
    steps = np.arange(filled.shape[1])
    n_steps = filled.sum(1).astype(np.int64)
    bad = np.flatnonzero(((filled != 0) != (steps < n_steps[:, None])).any(1) | (n_steps < 2))
    if len(bad):
        raise DatasetError(f"{path}: episode {bad[0]} has 'filled' {filled[bad[0]].tolist()}; expected 1s from "
                           f"step 0 on, covering at least one transition")
    term &= steps < (n_steps - 1)[:, None]  # flags in the padding or at the final step mean nothing
    terminal = term.any(1)
    L = np.where(terminal, term.argmax(1) + 1, n_steps - 1)
    return L, terminal, int((L < n_steps - 1).sum())


def _scan(parts, env_info, episode_limit):
    """Check every part (shapes, consistency, the env) before anything is written; per-part episode ends."""
    scans, first = [], None
    for path in parts:
        with _open(path) as f:
            N, T1, info = _part_shapes(f, path)
            if first is None:
                first = (path, T1, info)
            elif (T1, info) != first[1:]:
                raise DatasetError(f"{path}: shapes (T+1={T1}, {info}) differ from those of {first[0]} "
                                   f"(T+1={first[1]}, {first[2]}): parts of one dataset must match")
            key = "corrected_terminated" if "corrected_terminated" in f else "terminated"
            L, terminal, n_cut = _episode_ends(f, key, path)
        scans.append({"path": path, "N": N, "L": L, "terminal": terminal, "key": key, "n_cut": n_cut})
    if not sum(s["N"] for s in scans):
        raise DatasetError(f"{', '.join(parts)}: no episodes")
    path, T1, info = first
    if env_info is not None:
        env = {k: int(np.prod(env_info[k])) for k in SHAPE_KEYS}
        diff = [f"{k}={info[k]} (env: {env[k]})" for k in SHAPE_KEYS if info[k] != env[k]]
        if diff:
            raise DatasetError(f"{path}: the data does not fit the env: {', '.join(diff)}; "
                               f"check the env config and its env_args")
    limit = T1 - 1 if episode_limit is None else int(episode_limit)
    for s in scans:
        if len(s["L"]) and s["L"].max() > limit:
            i = int(s["L"].argmax())
            raise DatasetError(f"{s['path']}: episode {i} has {s['L'][i]} transitions, more than "
                               f"episode_limit={limit} (raise the env's time limit)")
    return scans, T1, info, limit


def _resolve(mode, scans, horizon):
    """(rule, looks_like_timeouts_stored_as_terminals)."""
    full = np.concatenate([s["L"] == horizon for s in scans])
    full_terminal = np.concatenate([(s["L"] == horizon) & s["terminal"] for s in scans])
    stored_as_terminal = bool(full.any() and full_terminal.sum() == full.sum())
    if mode == "auto":
        mode = "truncate" if stored_as_terminal else "keep"
    return mode, stored_as_terminal


def _chunk(f, n_max):
    per_episode = sum(f[k].dtype.itemsize * int(np.prod(f[k].shape[1:])) for k in OFFPYMARL_KEYS)
    return int(max(1, min(n_max, CHUNK_BYTES // max(1, per_episode), 4096)))


def _episodes(f, s, lo, hi, t, terminal, A, path):
    """Our arrays {field: [b, t, ...]} for episodes lo:hi of a part, steps after each episode's end zeroed."""
    L = s["L"][lo:hi]
    b, steps = hi - lo, np.arange(t)
    in_episode, in_transitions = steps <= L[:, None], steps < L[:, None]
    out = {}
    for key, mask in (("state", in_episode), ("obs", in_episode), ("avail_actions", in_episode),
                      ("actions", in_episode), ("reward", in_transitions)):
        a = f[key][lo:hi, :t]
        if (key, a.ndim) in (("actions", 3), ("reward", 2)):
            a = a[..., None]
        out[key] = np.where(mask.reshape(b, t, *[1] * (a.ndim - 2)), a, 0)
    acts = out["actions"][in_episode]
    if acts.size and (acts.min() < 0 or acts.max() >= A):
        raise DatasetError(f"{path}: actions outside [0, {A}) in episodes {lo}..{hi - 1}")
    out["filled"] = in_episode.astype(np.uint8)[..., None]
    out["terminated"] = np.zeros((b, t, 1), dtype=np.uint8)
    out["terminated"][np.arange(b), L - 1, 0] = terminal
    out["truncated"] = (~terminal).astype(np.uint8)  # per episode: the writer puts it at the last transition
    return out


def import_offpymarl(sources, out_path, env_name, env_args, episode_limit=None, time_limit_terminals="auto",
                     quality="unknown", progress=True, env_info=None, overwrite=False):
    """Convert OffPyMARL part files into one dataset at `out_path` (nothing is left there on an error).

    sources: part files or folders of them; env_name/env_args: our env the data belongs to (recorded, and
    checked by the offline run); episode_limit: our T (default: env_info's, else the source's);
    env_info: our env's get_env_info(), to check the shapes against; quality: one name for every agent.
    Returns a summary dict (episodes, transitions, terminated, truncated, mean_return, ...)."""
    if time_limit_terminals not in TIME_LIMIT_MODES:
        raise ValueError(f"time_limit_terminals must be one of {TIME_LIMIT_MODES}, got {time_limit_terminals!r}")
    out_path = os.fspath(out_path)
    if os.path.exists(out_path) and not overwrite:
        raise FileExistsError(f"{out_path} exists (overwrite=True / --overwrite replaces it)")
    parts = offpymarl_parts(sources)
    if episode_limit is None and env_info is not None:
        episode_limit = int(env_info["episode_limit"])
    scans, T1, info, limit = _scan(parts, env_info, episode_limit)
    horizon = min(T1 - 1, limit)
    rule, stored_as_terminal = _resolve(time_limit_terminals, scans, horizon)
    config = {"importer": "offpymarl", "sources": parts, "time_limit_terminals": time_limit_terminals,
              "time_limit_rule": rule, "time_limit": horizon, "source_episode_limit": T1 - 1,
              "episode_limit": limit, "quality": quality, "env": env_name, "env_args": dict(env_args or {}),
              "truncation_as_terminal": rule == "keep" and stored_as_terminal}
    provenance, totals = [], {"converted": 0, "terminated": 0, "truncated": 0, "transitions": 0, "return": 0.0}
    n_total = sum(s["N"] for s in scans)
    with DatasetWriter(out_path, {**info, "episode_limit": limit}, env_name, env_args, config,
                       progress=n_total if progress else None, provenance=provenance) as w:
        for s in scans:
            convert = (rule == "truncate") & (s["L"] == horizon) & s["terminal"]
            terminal = s["terminal"] & ~convert
            with _open(s["path"]) as f:
                step = _chunk(f, s["N"])
                for lo in range(0, s["N"], step):
                    hi = min(s["N"], lo + step)
                    arr = _episodes(f, s, lo, hi, min(T1, limit + 1), terminal[lo:hi], info["n_actions"],
                                    s["path"])
                    w.add_arrays(arr, qualities=quality)
                    totals["return"] += float(arr["reward"].astype(np.float32).sum(dtype=np.float64))
            provenance.append({"file": s["path"], "format": "offpymarl", "env": env_name, "n_episodes": s["N"],
                               "terminated_key": s["key"], "n_time_limit_terminals_truncated": int(convert.sum()),
                               "n_cut_after_terminal": s["n_cut"]})
            totals["converted"] += int(convert.sum())
            totals["terminated"] += int(terminal.sum())
            totals["truncated"] += int((~terminal).sum())
            totals["transitions"] += int(s["L"].sum())
    return {"out": out_path, "episodes": n_total, "transitions": totals["transitions"],
            "terminated": totals["terminated"], "truncated": totals["truncated"],
            "time_limit_terminals_truncated": totals["converted"], "time_limit_rule": rule, "time_limit": horizon,
            "cut_after_terminal": sum(s["n_cut"] for s in scans),
            "mean_return": totals["return"] / n_total if n_total else float("nan"), "parts": len(parts)}
