"""Checkpoint folders: results/models/<run>/<t_env>/ holding the learner's files and run_state.th.

Files load with torch's weights_only=True (tensors and plain Python values only, no code), so a checkpoint
from elsewhere cannot run code on load. A damaged file, or one that is not a checkpoint, is reported by name (a
DamagedCheckpoint, a config error: one line, exit status 2), with the load_step that
resumes from the checkpoint before it. A read that fails for a passing reason (EIO, a network disk's ESTALE or
timeout) is not the file's fault: it stays an OSError, an error a sweep retries.
"""
import errno
import json
import os
import zipfile

import numpy as np
import torch as th

from utils.config import ConfigError
from utils.files import atomic_path, clean_stale_temps, is_temp, write_json_atomic
from utils.paths import unseeded

RUN_STATE = "run_state.th"
BUFFER = "buffer.th"  # the replay buffer (save_replay_buffer=True): in the run's latest checkpoint only
RUN_CONFIG = "config.json"
# run_state.th written before RNG states were saved as plain values held numpy's MT19937 key array
LEGACY_RUN_STATE_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), np.zeros(1).__reduce__()[0]]
_cleaned = set()


class CheckpointError(RuntimeError):
    pass


class CheckpointMismatch(CheckpointError, ConfigError):
    """The checkpoint does not fit the requested config (algorithm, network settings, env shapes): a config error,
    found before anything is loaded."""


class DamagedCheckpoint(CheckpointError, ConfigError):
    """A checkpoint file that is damaged or not a checkpoint at all: the run stops before it trains, with one line
    naming the file and the checkpoint to take instead (as a config error: exit status 2, no run folder left)."""

    label = "checkpoint error"  # main.py's one line starts with it, not "config error"


def checkpoint_steps(run_dir):
    """The complete numbered checkpoints (folders holding agent.th) of a run folder, ascending."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    return sorted(int(d) for d in names if d.isdigit() and os.path.isfile(os.path.join(run_dir, d, "agent.th")))


def folder_step(path):
    """The step a checkpoint folder is named after (0 if it is not a number)."""
    name = os.path.basename(os.path.normpath(path))
    return int(name) if name.isdigit() else 0


def locate_checkpoint(checkpoint_path, load_step=0):
    """(run folder, checkpoint folder) that `checkpoint_path` and `load_step` name, without reading the checkpoint:
    `checkpoint_path` itself if it holds a checkpoint (its run folder is the one above), else its numbered
    sub-folder closest to `load_step` (0 = latest). Raises a clear error if there is none."""
    if not os.path.isdir(checkpoint_path):
        raise FileNotFoundError(f"checkpoint_path '{checkpoint_path}' is not a folder; pass a "
                                f"results/models/<run> folder (or one of its numbered sub-folders)")
    if is_temp(checkpoint_path):
        raise CheckpointError(f"'{checkpoint_path}' is an unfinished checkpoint (its save was interrupted); "
                              f"pass its run folder {os.path.dirname(os.path.normpath(checkpoint_path))}")
    if os.path.isfile(os.path.join(checkpoint_path, "agent.th")):
        return os.path.dirname(os.path.normpath(checkpoint_path)), checkpoint_path
    steps = checkpoint_steps(checkpoint_path)
    if not steps:
        raise FileNotFoundError(f"no checkpoints (numbered folders with agent.th) in '{checkpoint_path}'")
    step = max(steps) if load_step == 0 else min(steps, key=lambda s: abs(s - load_step))
    return checkpoint_path, os.path.join(checkpoint_path, str(step))


def find_checkpoint(checkpoint_path, load_step=0):
    """The folder to load (see locate_checkpoint). Raises a clear error if there is none, or if a file of the chosen
    checkpoint is damaged. Unfinished writes (temps) are never chosen; those of dead writers are deleted."""
    if os.path.isdir(checkpoint_path) and not is_temp(checkpoint_path) \
            and not os.path.isfile(os.path.join(checkpoint_path, "agent.th")):
        clean_stale_temps(checkpoint_path)
    path = locate_checkpoint(checkpoint_path, load_step)[1]
    check_intact(path)
    return path


def skip_hint(file):
    """How to resume without the checkpoint holding `file`: the load_step of the run's previous checkpoint."""
    folder = os.path.dirname(os.path.abspath(file))
    step, run_dir = os.path.basename(folder), os.path.dirname(folder)
    if not step.isdigit():
        return "pass another checkpoint as checkpoint_path"
    earlier = [s for s in checkpoint_steps(run_dir) if s < int(step)]
    if not earlier:
        return (f"there is no earlier checkpoint in {run_dir} to resume from instead: pass another run's "
                f"checkpoint_path, or start without one")
    return f"to resume from the previous checkpoint instead, pass checkpoint_path={run_dir} load_step={earlier[-1]}"


# torch.save's older (non-zip) format starts with this pickled magic number; its zip format with a zip header
LEGACY_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
ZIP_HEADER = b"PK\x03\x04"


def damage(file):
    """What is wrong with `file` as a checkpoint file, completing "checkpoint file <file> ...", or None if it looks
    intact: empty, not a file torch.save writes (a text file, ...), or a torch zip archive that is cut short or
    fails its checksums. Files in torch's older non-zip format cannot be checked here; torch.load reports those."""
    try:
        with open(file, "rb") as f:
            head = f.read(32)
        if not head:
            return "is empty (0 bytes): it is damaged (a copy or save cut short)"
        if not head.startswith(ZIP_HEADER):
            if head.startswith(b"\x80") and LEGACY_MAGIC in head:
                return None
            text = _text(head)
            what = (f"it holds text: {text[:24]!r}{'...' if len(text) > 24 else ''}" if text
                    else f"it starts with {head[:12]!r}")
            return f"is not a checkpoint file: torch.save did not write it ({what})"
        with zipfile.ZipFile(file) as z:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
                return "is not a checkpoint file: a zip archive, but not one torch.save writes (it has no data.pkl)"
            bad = z.testzip()
        return f"is damaged: its member {bad} fails its checksum" if bad else None
    except (zipfile.BadZipFile, EOFError) as e:
        return f"is damaged: cut short or corrupted ({type(e).__name__}: {e})"
    except OSError as e:
        if passing(e):
            raise
        return f"cannot be read ({type(e).__name__}: {e})"


def passing(error):
    """Whether OSError `error` may pass on a retry (an I/O error, a network disk's stale handle or timeout), so it is
    not the file's fault: not a missing file, a folder, a permission or a bad seek in a file cut short."""
    return not isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)) \
        and error.errno != errno.EINVAL


def _text(head):
    """`head` as text if it is printable text (a cut-off last character aside), else None."""
    text = head.decode("utf-8", errors="ignore")
    return text if text and len(text) >= len(head) - 3 and all(c.isprintable() or c in "\t\r\n" for c in text) \
        else None


def check_intact(folder):
    """Read every .th file of a checkpoint folder against its checksums before any of it is loaded."""
    for name in sorted(os.listdir(folder)):
        file = os.path.join(folder, name)
        if name.endswith(".th") and os.path.isfile(file):
            why = damage(file)
            if why:
                raise DamagedCheckpoint(f"checkpoint file {file} {why}; {skip_hint(file)}")


def load_file(file, legacy_globals=()):
    """torch.load with weights_only=True; any failure names the file, what is wrong with it and the load_step that
    skips it (DamagedCheckpoint)."""
    try:
        with th.serialization.safe_globals(list(legacy_globals)):
            return th.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, OSError) and passing(e):
            raise
        why = damage(file)
        if why is None and "Unsupported global" in str(e):
            why = ("holds Python objects beyond tensors and plain values, which are not loaded (weights_only=True: "
                   "written by another program?)")
        elif why is None:
            why = f"is damaged or not a checkpoint file: torch cannot read it ({_torch_reason(e)})"
        raise DamagedCheckpoint(f"checkpoint file {file} {why}; {skip_hint(file)}") from e


def _torch_reason(error):
    """The line of torch.load's error that says what it met (its weights-only errors open with advice)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error:"):
            rest = line.split(":", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return f"{type(error).__name__}: {rest}"
    if lines:
        return f"{type(error).__name__}: {lines[0]}"
    return "EOFError: the file ends early" if isinstance(error, EOFError) else type(error).__name__


def save_checkpoint(learner, path, run_state, buffer=None):
    """Write into a temporary folder and rename, so an interrupted save never looks complete. `buffer` (the replay
    buffer's state) goes to buffer.th; once this checkpoint is complete (renamed and on disk), the buffer files of
    the run's earlier checkpoints are deleted: a run keeps one buffer, in its latest checkpoint."""
    models = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if models not in _cleaned:  # once per process: the litter of earlier runs killed while saving
        clean_stale_temps(models, depth=1)
        _cleaned.add(models)
    with atomic_path(path) as tmp:
        os.makedirs(tmp)
        learner.save_models(tmp)
        th.save(run_state, os.path.join(tmp, RUN_STATE))
        if buffer is not None:
            th.save(buffer, os.path.join(tmp, BUFFER))
            _fsync(os.path.join(tmp, BUFFER))
    if buffer is not None:
        _fsync(os.path.dirname(os.path.abspath(path)))  # the rename is on disk before an older copy goes
        drop_older_buffers(path)


def _fsync(path):
    """Flush a file, or a folder's entries, to disk (folders cannot be opened on some platforms: skipped there)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def drop_older_buffers(path):
    """Delete buffer.th from the checkpoints of `path`'s run folder that are older than `path` (a numbered folder
    holding a complete buffer.th); returns the files deleted. Newer ones (of a run that went on past the checkpoint
    this one resumed from) are left alone."""
    run_dir, name = os.path.split(os.path.normpath(os.path.abspath(path)))
    if not name.isdigit() or not os.path.isfile(os.path.join(path, BUFFER)):
        return []
    dropped = []
    for step in checkpoint_steps(run_dir):
        file = os.path.join(run_dir, str(step), BUFFER)
        if step < int(name) and os.path.isfile(file):
            os.remove(file)
            dropped.append(file)
    return dropped


def load_buffer(path):
    """The replay buffer's state saved with the checkpoint at `path`, or None where it has none."""
    file = os.path.join(path, BUFFER)
    return load_file(file) if os.path.isfile(file) else None


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


# ----- does a checkpoint fit the run that loads it? (checked before anything is loaded) -----
# the algorithm: which learner, controller, agent, mixer and critic the checkpoint's files belong to
IDENTITY_KEYS = ("learner", "mac", "agent", "agent_output_type", "mixer", "critic_type", "critic_agent")
CRITIC_KEYS = ("critic_type", "critic_agent")
# settings that size the agents' networks (evaluation loads the agents only)
AGENT_SHAPE_KEYS = ("hidden_dim", "use_rnn", "obs_agent_id", "obs_last_action")
# ... and those of the mixer and critics (resuming loads them too)
TRAINING_SHAPE_KEYS = ("critic_hidden_dim", "obs_individual_obs", "omar_critic_state", "mixing_embed_dim",
                       "hypernet_layers", "hypernet_embed", "adv_hypernet_layers", "adv_hypernet_embed", "num_kernel",
                       "n_query_embedding_layer1", "n_query_embedding_layer2", "n_key_embedding_layer1",
                       "n_head_embedding_layer1", "n_head_embedding_layer2", "n_attention_head", "n_constrant_value",
                       "absorbing")
# what the env gives (saved with the checkpoints' config since issue 12; absent from older config.json files)
ENV_SHAPE_KEYS = ("n_agents", "n_actions", "obs_shape", "state_shape")
ACTOR_ENV_KEYS = ("n_agents", "n_actions", "obs_shape")
MIXER_KEYS = {  # the mixer settings that matter, by mixer (others never differ in effect)
    "qmix": ("mixing_embed_dim", "hypernet_layers", "hypernet_embed"),
    "qllm": ("mixing_embed_dim", "hypernet_layers", "hypernet_embed"),
    "lmix": ("mixing_embed_dim",),
    "qplex": ("mixing_embed_dim", "hypernet_embed", "adv_hypernet_layers", "adv_hypernet_embed", "num_kernel"),
    "qatten": ("n_query_embedding_layer1", "n_query_embedding_layer2", "n_key_embedding_layer1",
               "n_head_embedding_layer1", "n_head_embedding_layer2", "n_attention_head", "n_constrant_value"),
}


def _value(v):
    if isinstance(v, tuple):
        v = list(v)
    return "none" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _env_args(config):
    return unseeded(config.get("env_args"))


def _describe(config, keys):
    name = config.get("name", "?")
    parts = [f"{k} {_value(config.get(k))}" for k in keys if k in config]
    return f"{name} ({', '.join(parts)})" if parts else name


def checkpoint_mismatch(saved, requested, evaluate=False, with_env=True):
    """Why a checkpoint whose run config is `saved` cannot be loaded by a run of `requested` (a message naming the
    difference and the fix), or None. Keys either config lacks are not compared (checkpoints from before a key was
    saved); `with_env`: compare the env's shapes too (known once the env is built)."""
    # the critic keys only actor-critic configs have: one config without them is another algorithm
    present = [k for k in IDENTITY_KEYS if (k in saved and k in requested) or (k in CRITIC_KEYS
                                                                                and (k in saved or k in requested))]
    identity = [k for k in present if saved.get(k) != requested.get(k)]
    if identity:
        used = [k for k in present if saved.get(k) is not None or requested.get(k) is not None]
        name = saved.get("name")
        fix = f"use --config={name}" if name else "use the --config it was trained with"
        return (f"the checkpoint was trained with {_describe(saved, used)}; you asked for "
                f"{_describe(requested, used)}: {fix}")
    if not evaluate:  # a resumed run continues the checkpoint's env (evaluating on another env is allowed)
        why = env_mismatch(saved, requested)
        if why:
            return why
    shape_keys = list(AGENT_SHAPE_KEYS)
    if not evaluate:
        mixer_keys = MIXER_KEYS.get(saved.get("mixer"), ())
        shape_keys += [k for k in TRAINING_SHAPE_KEYS if k in mixer_keys or k not in sum(MIXER_KEYS.values(), ())]
    shapes = [k for k in shape_keys if k in saved and k in requested and saved[k] != requested[k]]
    if shapes:
        theirs = " ".join(f"{k}={_value(saved[k])}" for k in shapes)
        ours = " ".join(f"{k}={_value(requested[k])}" for k in shapes)
        return (f"the checkpoint's networks were built with {theirs}; this run asks for {ours}: pass {theirs} "
                f"(or leave them at the values of the checkpoint's config)")
    env_keys = ACTOR_ENV_KEYS if evaluate else ENV_SHAPE_KEYS
    envs = [k for k in env_keys if with_env and k in saved and k in requested
            and _value(saved[k]) != _value(requested[k])]
    if envs:
        env = saved.get("env_config") or saved.get("env")
        return (f"the checkpoint was trained on an env with {', '.join(f'{k} {_value(saved[k])}' for k in envs)}; "
                f"this env ({requested.get('env_config') or requested.get('env')}, {_env_args(requested)}) "
                f"gives {', '.join(f'{k} {_value(requested[k])}' for k in envs)}: use --env-config={env} with the "
                f"env_args it was trained with ({_env_args(saved)})")
    return None


def env_mismatch(saved, requested):
    """Why a run of `requested` cannot continue a checkpoint trained on `saved`'s env (another env, or env_args that
    differ besides the seed), or None. Keys a config lacks are not compared (older checkpoints)."""
    diffs = []
    if "env" in saved and "env" in requested and saved["env"] != requested["env"]:
        diffs.append(f"env {_value(saved['env'])} (this run: {_value(requested['env'])})")
    if isinstance(saved.get("env_args"), dict) and isinstance(requested.get("env_args"), dict):
        theirs, ours = _env_args(saved), _env_args(requested)
        for k in sorted(set(theirs) | set(ours)):
            a, b = theirs.get(k, "unset"), ours.get(k, "unset")
            if _value(a) != _value(b):
                diffs.append(f"env_args.{k} {_value(a)} (this run: {_value(b)})")
    if not diffs:
        return None
    env = saved.get("env_config") or saved.get("env")
    return (f"the checkpoint was trained on {'; '.join(diffs)}: a resumed run continues on the env it was trained on; "
            f"use --env-config={env} with the checkpoint's env_args ({_env_args(saved)}), or train a new run (to "
            f"test the policy on another env: evaluate=True)")


def changed_settings(saved, requested):
    """{dotted key: [the checkpoint's value, this run's]} of the settings a resumed run changes, leaving out
    bookkeeping (utils.runs.IGNORED: outputs, cadence, t_max, machine, ...), the seed and what the env reports."""
    from utils.runs import flatten, ignored  # the results tools' notion of "the same experiment"

    theirs = flatten({k: v for k, v in saved.items() if k not in ENV_SHAPE_KEYS})
    ours = flatten({k: v for k, v in requested.items() if k not in ENV_SHAPE_KEYS})
    return {k: [theirs.get(k), ours.get(k)] for k in sorted(set(theirs) & set(ours))
            if not ignored(k) and _value(theirs[k]) != _value(ours[k])}


def check_checkpoint_config(checkpoint_path, load_step, requested, evaluate=False, with_env=True):
    """Raise CheckpointError naming the mismatch when the checkpoint's saved config does not fit `requested`;
    checkpoints written without a config.json pass (loading them reports what does not fit)."""
    run_dir, path = locate_checkpoint(checkpoint_path, load_step)
    saved = load_run_config(run_dir)
    why = None if saved is None else checkpoint_mismatch(saved, requested, evaluate, with_env)
    if why:
        raise CheckpointMismatch(f"cannot {'evaluate' if evaluate else 'resume from'} {path}: {why}")
    return saved


def load_mismatch_hint(checkpoint_path, requested):
    """For a load that failed (missing keys, size mismatch): the settings in which the checkpoint's config and
    `requested` differ, or a note that its config.json is missing."""
    run_dir = locate_checkpoint(checkpoint_path)[0] if os.path.isdir(checkpoint_path) else checkpoint_path
    saved = load_run_config(run_dir)
    if saved is None:
        return f"{run_dir} has no config.json to compare with; check --config and the network settings"
    keys = IDENTITY_KEYS + AGENT_SHAPE_KEYS + TRAINING_SHAPE_KEYS + ENV_SHAPE_KEYS
    diff = [f"{k}: checkpoint {_value(saved[k])}, this run {_value(requested[k])}" for k in keys
            if k in saved and k in requested and _value(saved[k]) != _value(requested[k])]
    return ("the settings differ in " + "; ".join(diff)) if diff else "its config.json names no differing setting"
