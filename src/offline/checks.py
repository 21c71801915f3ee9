"""Checks of an offline dataset's content (offline/reader.py): HDF5 checksum failures and values a learner
cannot use. Vectorised over episodes: the failure paths alone look for where the problem is."""
import numpy as np

from offline.format import DatasetError


def drop_command(path):
    return f"python scripts/drop_episodes.py {path} OUT.h5 --invalid (or --episodes i,j,...)"


def _ranges(rows):
    """'3..5, 9' for sorted episode indices."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return ""
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    parts = [(int(r[0]), int(r[-1])) for r in np.split(rows, cuts)]
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in parts)


def _chunk_slices(dset, rows=None):
    """Slices along the episode axis, one per stored chunk (those holding `rows` when given)."""
    c, n = (dset.chunks or (len(dset),))[0], len(dset)
    starts = range(0, n, c) if rows is None else np.unique(np.asarray(rows, dtype=np.int64) // c) * c
    return [slice(int(s), min(n, int(s) + c)) for s in starts]


def read_salvage(dset):
    """(array, unreadable [E] bool): the whole dataset read chunk by chunk, zeros where a chunk fails to read
    (an HDF5 checksum or decompression failure)."""
    out = np.zeros(dset.shape, dtype=dset.dtype)
    bad = np.zeros(len(dset), dtype=bool)
    for s in _chunk_slices(dset):
        try:
            out[s] = dset[s]
        except OSError:
            bad[s] = True
    return out, bad


def read(dset, path, rows=None):
    """dset[rows] (all rows when None); a read failure becomes a DatasetError naming the field and the
    episodes of the chunks that fail."""
    try:
        return dset[()] if rows is None else dset[rows]
    except OSError as e:
        bad = []
        for s in _chunk_slices(dset, rows):
            try:
                dset[s]
            except OSError:
                bad.extend(range(s.start, s.stop))
        where = f"episodes {_ranges(bad)}" if bad else "an unknown part"
        # HDF5 reports a failed Fletcher32 check only as a filter failure (2.0: "filter returned failure")
        why = (f"the stored chunks fail their {'Fletcher32 checksum or ' if dset.fletcher32 else ''}decompression: "
               f"the bytes were changed or damaged after writing ({e})")
        raise DatasetError(
            f"{path}: field '{dset.name.lstrip('/')}' cannot be read in {where}: {why}. "
            f"Restore the file from a copy or collect it again; if the damage is confined to these episodes, "
            f"drop them into a new file (the original is kept) with: {drop_command(path)}") from e


def content_problems(a, n_actions, truncation_as_terminal=False):
    """[(field, rule broken, bad [E, T+1] bool)] of every check that fails, for arrays in the stored layout.

    filled: 1s then 0s, at least one transition (2 steps), as the writer requires; episode_return (when given, [E])
    finite (a NaN return ranks and labels as a tie with everything); floats finite at every step
    (a NaN in padding still poisons a masked loss); actions in [0, n_actions) at every step (padding is one-hot
    encoded too), and available at transition steps 0..L-1 (step L's action is a placeholder the runners pick
    for t+1 indexing, never taken); terminated / truncated only at the last transition L-1, not both unless the
    data was collected with truncation_as_terminal (time-limit ends stored as terminals)."""
    filled = a["filled"].reshape(a["filled"].shape[:2])
    E, T1 = filled.shape
    if E == 0:  # a complete file of no episodes: nothing to check (run: offline refuses it by name)
        return []
    steps = np.arange(T1)
    n = (filled != 0).sum(1)
    out = []
    bad = filled != (steps < n[:, None])
    bad[:, 0] |= n < 2
    if bad.any():
        out.append(("filled", "is not 1s then 0s covering at least one transition", bad))
    for key in ("obs", "state", "reward", "avail_actions"):
        x = a[key]
        # a sum is one fast pass (NaN and inf propagate): only a non-finite (or overflowing) sum needs the
        # elementwise look
        if x.dtype.kind == "f" and not np.isfinite(x.sum()):
            bad = ~np.isfinite(x).reshape(E, T1, -1).all(2)
            if bad.any():
                out.append((key, "is not finite (NaN or inf)", bad))
    if "episode_return" in a:  # per episode: marked at step 0
        ret = np.asarray(a["episode_return"])
        if ret.dtype.kind == "f" and not np.isfinite(ret).all():
            bad = np.zeros((E, T1), dtype=bool)
            bad[:, 0] = ~np.isfinite(ret)
            out.append(("episode_return", "is not finite (NaN or inf)", bad))
    act = a["actions"].reshape(E, T1, -1)
    if act.size and (act.min() < 0 or act.max() >= n_actions):
        out.append(("actions", f"is outside [0, {n_actions})", ((act < 0) | (act >= n_actions)).any(2)))
    avail = a["avail_actions"]
    if not avail.all():  # all available (e.g. MPE): nothing to look up
        transition = steps < (n - 1)[:, None]
        taken = np.take_along_axis(avail, np.clip(act, 0, n_actions - 1)[..., None], axis=-1)[..., 0]
        bad = (taken == 0).any(2) & transition
        if bad.any():
            out.append(("actions", "is not available (avail_actions is 0 for it)", bad))
    last = steps == (n - 2)[:, None]
    flags = {k: a[k].reshape(E, T1) != 0 for k in ("terminated", "truncated")}
    for key, f in flags.items():
        bad = f & ~last
        if bad.any():
            out.append((key, "is set where it is not the episode's last transition", bad))
    if not truncation_as_terminal:
        bad = flags["terminated"] & flags["truncated"]
        if bad.any():
            out.append(("terminated", "and truncated are both set (only one way to end an episode)", bad))
    return out


def invalid_episodes(a, n_actions, truncation_as_terminal=False):
    """[E] bool: the episodes that fail any content check."""
    bad = np.zeros(a["filled"].shape[0], dtype=bool)
    for _, _, b in content_problems(a, n_actions, truncation_as_terminal):
        bad |= b.any(1)
    return bad


def check_content(a, n_actions, path, truncation_as_terminal=False, episodes=None):
    """Raise a DatasetError naming the field, episode and step of the first problem (episode numbers are
    `episodes[i]` for row i when given: the file's numbering for a partial read)."""
    problems = content_problems(a, n_actions, truncation_as_terminal)
    if not problems:
        return
    field, rule, bad = problems[0]
    e, t = (int(v) for v in np.argwhere(bad)[0])
    value = np.asarray(a[field][e] if np.ndim(a[field]) == 1 else a[field][e, t])
    if value.dtype.kind == "f":  # [n, O] observations: which agents
        shown = f" (agents {np.flatnonzero(~np.isfinite(value).all(1)).tolist()})" if value.ndim == 2 else \
            (f" (value {value.item()})" if value.ndim == 0 else "")
    else:
        shown = f" (value {value.ravel().tolist()})"
    rows = np.zeros(len(bad), dtype=bool)
    for _, _, b in problems:
        rows |= b.any(1)
    number = (lambda i: int(episodes[i])) if episodes is not None else int
    others = [number(i) for i in np.flatnonzero(rows)]
    raise DatasetError(f"{path}: '{field}' {rule} at episode {number(e)}, step {t}{shown}; "
                       f"{len(others)} episode(s) fail validation ({_ranges(others[:50])}"
                       f"{', ...' if len(others) > 50 else ''}); drop the bad episodes into a new file (the original "
                       f"is kept) with: {drop_command(path)}")
