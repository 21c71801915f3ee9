"""Checkpoint folders: results/models/<run>/<t_env>/ holding the learner's files and run_state.th.

Files load with torch's weights_only=True (tensors and plain Python values only, no code), so a checkpoint
from elsewhere cannot run code on load. A damaged file is reported by name, with the load_step that
resumes from the checkpoint before it.
"""
import json
import os
import zipfile

import numpy as np
import torch as th

from utils.files import atomic_path, clean_stale_temps, is_temp, write_json_atomic

RUN_STATE = "run_state.th"
RUN_CONFIG = "config.json"
# run_state.th written before RNG states were saved as plain values held numpy's MT19937 key array
LEGACY_RUN_STATE_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), np.zeros(1).__reduce__()[0]]
_cleaned = set()


class CheckpointError(RuntimeError):
    pass


def checkpoint_steps(run_dir):
    """The complete numbered checkpoints (folders holding agent.th) of a run folder, ascending."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    return sorted(int(d) for d in names if d.isdigit() and os.path.isfile(os.path.join(run_dir, d, "agent.th")))


def find_checkpoint(checkpoint_path, load_step=0):
    """The folder to load: `checkpoint_path` itself if it holds a checkpoint, else its numbered
    sub-folder closest to `load_step` (0 = latest). Raises a clear error if there is none, or if a file of
    the chosen checkpoint is damaged. Unfinished writes (temps) are never chosen; those of dead writers
    are deleted."""
    if not os.path.isdir(checkpoint_path):
        raise FileNotFoundError(f"checkpoint_path '{checkpoint_path}' is not a folder; pass a "
                                f"results/models/<run> folder (or one of its numbered sub-folders)")
    if is_temp(checkpoint_path):
        raise CheckpointError(f"'{checkpoint_path}' is an unfinished checkpoint (its save was interrupted); "
                              f"pass its run folder {os.path.dirname(os.path.normpath(checkpoint_path))}")
    if os.path.isfile(os.path.join(checkpoint_path, "agent.th")):
        check_intact(checkpoint_path)
        return checkpoint_path
    clean_stale_temps(checkpoint_path)
    steps = checkpoint_steps(checkpoint_path)
    if not steps:
        raise FileNotFoundError(f"no checkpoints (numbered folders with agent.th) in '{checkpoint_path}'")
    step = max(steps) if load_step == 0 else min(steps, key=lambda s: abs(s - load_step))
    path = os.path.join(checkpoint_path, str(step))
    check_intact(path)
    return path


def skip_hint(file):
    """How to resume without the checkpoint holding `file`: the load_step of the run's previous checkpoint."""
    folder = os.path.dirname(os.path.abspath(file))
    step, run_dir = os.path.basename(folder), os.path.dirname(folder)
    if not step.isdigit():
        return "load another checkpoint"
    earlier = [s for s in checkpoint_steps(run_dir) if s < int(step)]
    if not earlier:
        return f"there is no earlier checkpoint in {run_dir} to resume from instead"
    return f"to resume from the previous checkpoint instead, pass checkpoint_path={run_dir} load_step={earlier[-1]}"


def damage(file):
    """Why `file` (a torch zip archive) is damaged, or None if it looks intact. Files in torch's older
    non-zip format cannot be checked here; torch.load reports those."""
    try:
        with open(file, "rb") as f:
            head = f.read(4)
        if not head:
            return "the file is empty"
        if head != b"PK\x03\x04":
            return None
        with zipfile.ZipFile(file) as z:
            bad = z.testzip()
        return f"member {bad} fails its checksum" if bad else None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        return f"{type(e).__name__}: {e}"


def check_intact(folder):
    """Read every .th file of a checkpoint folder against its checksums before any of it is loaded."""
    for name in sorted(os.listdir(folder)):
        file = os.path.join(folder, name)
        if name.endswith(".th") and os.path.isfile(file):
            why = damage(file)
            if why:
                raise CheckpointError(f"checkpoint file {file} is damaged ({why}); {skip_hint(file)}")


def load_file(file, legacy_globals=()):
    """torch.load with weights_only=True; any failure names the file and the load_step that skips it."""
    try:
        with th.serialization.safe_globals(list(legacy_globals)):
            return th.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        why = damage(file) or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if "Weights only load failed" in str(e):
            why = ("it holds Python objects beyond tensors and plain values, which are not loaded "
                   "(weights_only=True); was it written by another program?")
        raise CheckpointError(f"cannot load checkpoint file {file}: {why}; {skip_hint(file)}") from e


def save_checkpoint(learner, path, run_state):
    """Write into a temporary folder and rename, so an interrupted save never looks complete."""
    models = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if models not in _cleaned:  # once per process: the litter of earlier runs killed while saving
        clean_stale_temps(models, depth=1)
        _cleaned.add(models)
    with atomic_path(path) as tmp:
        os.makedirs(tmp)
        learner.save_models(tmp)
        th.save(run_state, os.path.join(tmp, RUN_STATE))


def load_run_state(path):
    file = os.path.join(path, RUN_STATE)
    return load_file(file, LEGACY_RUN_STATE_GLOBALS) if os.path.isfile(file) else None


def save_run_config(run_dir, config):
    """The run's full config next to its checkpoints (models/<run>/config.json), so that a checkpoint can be
    rebuilt without the YAML that trained it (dataset collection loads behaviour policies this way)."""
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isfile(path):
        write_json_atomic(path, config)


def load_run_config(run_dir):
    """The config saved by save_run_config, or None for checkpoints written without one."""
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
