"""Checkpoint folders: results/models/<run>/<t_env>/ holding the learner's files and run_state.th."""
import json
import os
import shutil

import torch as th

from utils.files import write_json_atomic

RUN_STATE = "run_state.th"
RUN_CONFIG = "config.json"


def find_checkpoint(checkpoint_path, load_step=0):
    """The folder to load: `checkpoint_path` itself if it holds a checkpoint, else its numbered
    sub-folder closest to `load_step` (0 = latest). Raises a clear error if there is none."""
    if not os.path.isdir(checkpoint_path):
        raise FileNotFoundError(f"checkpoint_path '{checkpoint_path}' is not a folder; pass a "
                                f"results/models/<run> folder (or one of its numbered sub-folders)")
    if os.path.isfile(os.path.join(checkpoint_path, "agent.th")):
        return checkpoint_path
    steps = [int(d) for d in os.listdir(checkpoint_path)
             if d.isdigit() and os.path.isfile(os.path.join(checkpoint_path, d, "agent.th"))]
    if not steps:
        raise FileNotFoundError(f"no checkpoints (numbered folders with agent.th) in '{checkpoint_path}'")
    step = max(steps) if load_step == 0 else min(steps, key=lambda s: abs(s - load_step))
    return os.path.join(checkpoint_path, str(step))


def save_checkpoint(learner, path, run_state):
    """Write into a temporary folder and rename, so an interrupted save never looks complete."""
    tmp = path + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    learner.save_models(tmp)
    th.save(run_state, os.path.join(tmp, RUN_STATE))
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def load_run_state(path):
    file = os.path.join(path, RUN_STATE)
    return th.load(file, map_location="cpu", weights_only=False) if os.path.isfile(file) else None


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
