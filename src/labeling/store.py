"""Where labels go: the dataset file itself (the layout and the atomic copy-edit-rename writes are in
offline/label_store.py, beside the dataset format, so that the reader and the offline samplers use the same code;
this module is the labeling layer's door to it).

    read_preferences(path_or_dataset, name) -> (pairs [P, 2] int64, label [P] float32, attrs)
    preference_names(path_or_dataset) -> [name, ...]
    write_preferences(path, name, pairs, label, attrs, expected_fingerprint, out=None, overwrite=False) -> path
    write_episode_labels(path, {name: [E, ...]}, attrs, expected_fingerprint, out=None, overwrite=False) -> path
    content_fingerprint(path_or_dataset) -> hex SHA-256 of the episode data (labels excluded)
    stored_attrs(path, GROUP | LABELS, name) -> attrs of a stored set or label (None: absent; `damaged`: its error)

`store_preferences` adds what every set records (code commit, dataset fingerprint, task and labeler provenance).
"""
from offline.label_store import (
    check_name,
    content_fingerprint,
    label_command,
    preference_names,
    read_preferences,
    stored_attrs,
    write_episode_labels,
    write_preferences,
)
from utils.provenance import git_info

__all__ = ["check_name", "content_fingerprint", "label_command", "preference_names", "read_preferences",
           "store_preferences", "stored_attrs", "write_episode_labels", "write_preferences", "code_version"]


def code_version():
    """The commit the labels were made with (and whether the checkout had uncommitted changes)."""
    git = git_info()
    return {"commit": git.get("commit"), "dirty": git.get("dirty")}


def store_preferences(source, name, pairs, label, attrs, out=None, overwrite=False):
    """Write preference set `name` for `source` (a labeling.base.LabelSource) into its file (or a copy at `out`),
    recording `attrs` plus the code version and the source file; refused when the file no longer holds the
    source's episodes. Returns the path written."""
    attrs = {**attrs, "code": code_version(), "source_file": source.path}
    return write_preferences(source.path, name, pairs, label, attrs, source.fingerprint, out=out,
                             overwrite=overwrite)
