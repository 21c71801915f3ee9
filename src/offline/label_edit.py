"""Removing and renaming the labels and preference sets stored in a dataset file (scripts/edit_labels.py; the layout
and the atomic copy-edit-rename write are offline/label_store.py's).

    edit_labels(path, remove_labels=["x"], remove_sets=["prefs"], rename_labels={"codi_z": "best_agent"})

A damaged set or label (one that fails where it is used, naming this edit) is removed like any other; everything not
named is kept as it is. The edit is one write: a copy of the file is edited and renamed over it once complete, under
the folder's writer lock, so an interruption leaves the file as it was and no concurrent labeling run loses its set.
"""
import os

import h5py

from offline.format import DatasetError, missing_dataset, to_json
from offline.label_store import GROUP, LABELS, check_name, edit_dataset, episode_label_attrs


def derived_labels(path, set_name):
    """labels/<name> of a dataset file that were computed from preference set `set_name` (O-MAPL's <set>_expert,
    _return_hat; MARL-SL's <set>_reward_hat): their attrs name it."""
    with h5py.File(path, "r") as f:
        if LABELS not in f:
            return []
        return sorted(n for n in f[LABELS] if episode_label_attrs(path, n).get("preference_set") == set_name)


def _missing(path, f, where, names):
    have = sorted(f[where]) if where in f else []
    what = "labels" if where == LABELS else "preference sets"
    return DatasetError(f"{path} has no {'label' if where == LABELS else 'preference set'} "
                        f"{', '.join(repr(n) for n in names)} ({what} present: {', '.join(have) or 'none'}); nothing "
                        f"was changed")


def edit_labels(path, remove_labels=(), remove_sets=(), rename_labels=None):
    """Remove labels/<name> for each of `remove_labels` and preferences/<name> for each of `remove_sets`, and rename
    labels {old: new} (its `label_name` attr follows; `renamed_from` records the old name), in one atomic edit of
    dataset `path`. Every name must be present and every new name free, else nothing is changed. Returns {"path",
    "removed": [...], "renamed": {...}, "stale": {set: [labels derived from it that remain]}}."""
    rename_labels = dict(rename_labels or {})
    if not (remove_labels or remove_sets or rename_labels):
        raise ValueError("nothing to edit: name labels or preference sets to remove, or labels to rename")
    for name in rename_labels.values():
        check_name(name, "a new label name")
    both = sorted(set(remove_labels) & set(rename_labels))
    if both:
        raise ValueError(f"labels {both} are both removed and renamed: choose one")
    if not os.path.exists(path):
        raise missing_dataset(f"offline dataset {path}")

    def edit(f, E):
        for where, names in ((LABELS, list(remove_labels) + list(rename_labels)), (GROUP, list(remove_sets))):
            absent = [n for n in names if where not in f or n not in f[where]]
            if absent:
                raise _missing(path, f, where, absent)
        taken = [new for old, new in rename_labels.items()
                 if LABELS in f and new in f[LABELS] and new not in remove_labels]
        if taken or len(set(rename_labels.values())) < len(rename_labels):
            raise DatasetError(f"{path}: a label {taken or sorted(rename_labels.values())} exists already or is named "
                               f"twice; choose other new names (or remove the existing label in the same edit); "
                               f"nothing was changed")
        for name in remove_labels:
            del f[LABELS][name]
        for name in remove_sets:
            del f[GROUP][name]
        for old, new in rename_labels.items():
            f[LABELS].move(old, new)
            obj = f[LABELS][new]
            if "label_name" in obj.attrs:
                obj.attrs["label_name"] = to_json(new)
            obj.attrs["renamed_from"] = to_json(old)

    written = edit_dataset(path, edit)
    stale = {s: derived for s in remove_sets if (derived := derived_labels(written, s))}
    removed = [f"{LABELS}/{n}" for n in remove_labels] + [f"{GROUP}/{n}" for n in remove_sets]
    return {"path": written, "removed": removed, "renamed": rename_labels, "stale": stale}
