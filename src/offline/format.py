"""The offline dataset format (the "Offline dataset (HDF5)" contract of DESIGN.md): what reader and writer share.

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
only in a file written by scripts/drop_episodes.py: the source file and the episodes left out).

Every dataset is written with HDF5 Fletcher32 checksums (per chunk), so changed bytes fail to read instead of
being trained on; files written before checksums (same schema_version) still load, unchecked. On load the content
is validated too (offline/checks.py): in memory, everything once; lazily, each read of episodes.

A writer (offline/writer.py) writes to a temporary file in the target folder and renames it to the target only
when it closes without error; on an exception the temporary file is removed. Resuming an interrupted collection
is not supported: an interrupted write is discarded (a process killed outright leaves its temporary file behind,
named after its writer (utils.files.temp_path); the next writer in that folder deletes it once that process is
gone, and readers (offline/reader.py) refuse it: it is never at the target path and has no `complete` attr).
"""
import json

import numpy as np

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


class DatasetError(ValueError):
    """A dataset file that cannot be used, with a message naming the problem."""
    repeats_on_retry = True


class DatasetMissing(DatasetError, FileNotFoundError):
    """A dataset file named by the config (offline_dataset, offline_expert, label_out's source) that does not exist: a
    user error like any other DatasetError (one line, exit 2, the run folder kept with the failure, a sweep does not
    retry the trial); still a FileNotFoundError for code that asks whether a file is there."""


def missing_dataset(what, hint=""):
    """The DatasetMissing of a dataset that does not exist; `what`: the path as the user gave it ("offline dataset
    <path>", "offline_expert=<path>"); `hint`: what to give instead (default: where datasets come from)."""
    return DatasetMissing(f"{what} does not exist: "
                          + (hint or "check the path, or collect a dataset with --config=collect (README: Offline "
                                     "MARL)"))


def to_json(obj):
    """The JSON text of a file attr (sorted keys, anything else as its str)."""
    return json.dumps(obj, sort_keys=True, default=str)


def _as_int(v):
    return int(np.prod(v)) if isinstance(v, (tuple, list)) else int(v)


def env_info_of(info):
    """The env info keys a dataset records, as ints (a shape given as a tuple becomes its size)."""
    return {k: _as_int(info[k]) for k in ENV_INFO_KEYS}


def check_env(env, env_args, expect_env, where):
    """Raise a DatasetError unless a dataset's env name and env_args match `expect_env`: a name, or
    (name or None, {env_args key: value} that must match)."""
    name, subset = (expect_env, {}) if isinstance(expect_env, str) else expect_env
    if name is not None and env != name:
        raise DatasetError(f"{where}: dataset env is '{env}', expected '{name}'")
    for k, v in (subset or {}).items():
        if k not in env_args:
            raise DatasetError(f"{where}: env_args has no '{k}' (expected {v!r})")
        if env_args[k] != v:
            raise DatasetError(f"{where}: env_args['{k}'] is {env_args[k]!r}, expected {v!r}")
