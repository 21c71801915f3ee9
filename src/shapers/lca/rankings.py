"""The LCA rankings file: one HDF5 file per ranking run, results/rankings/<env>/<id>/rankings.h5, written whole
(temporary file renamed when complete) by the labeling layer's `lca_state_pair` task and read by potential training.

One row per item = (transition, ranked agent i):
    obs, next_obs      [P, O]  float32  agent i's own observation (ego first) in s and in s'
    state, next_state  [P, S]  float32  the global state s and s'
    actions            [P, n]  int16    the joint action taken in s
    agent              [P]     int16    i
    group              [P]     int16    index of i's group in attrs["groups"] (agents of one group share a potential)
    answers            [P, K]  float32  query k's answer: 1 = i's action helps the team ([1]), 0 = it does not ([0]),
                                        NaN = no answer (unparsed, failed or not asked yet)
    oracle             [P]     float32  the env's pair_oracle: 1 better, 0 worse, 0.5 equal (accuracy only: it never
                                        labels or filters an LLM's rows)
attrs (JSON): schema_version, env, env_args, n_agents, obs_shape, state_shape, groups, agent_groups (group per
agent), identity_dims (obs indices of identity fields), queries (K), pair_seed, pair_source, plus whatever the
task records (labeler and template provenance, counts, accuracy, code version).
"""
import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from utils.config import ConfigError
from utils.files import atomic_path, sha256_file

SCHEMA_VERSION = 1
ARRAYS = {"obs": np.float32, "next_obs": np.float32, "state": np.float32, "next_state": np.float32,
          "actions": np.int16, "agent": np.int16, "group": np.int16, "answers": np.float32, "oracle": np.float32}
REQUIRED_ATTRS = ("env", "env_args", "n_agents", "obs_shape", "groups", "agent_groups", "identity_dims", "queries")


@dataclass
class Rankings:
    obs: np.ndarray
    next_obs: np.ndarray
    state: np.ndarray
    next_state: np.ndarray
    actions: np.ndarray
    agent: np.ndarray
    group: np.ndarray
    answers: np.ndarray
    oracle: np.ndarray
    attrs: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.agent)

    @property
    def yes(self):
        """[P] answers saying 'helps'."""
        return (self.answers == 1).sum(1)

    @property
    def no(self):
        """[P] answers saying 'does not help'."""
        return (self.answers == 0).sum(1)

    @property
    def missing(self):
        """[P] queries without an answer."""
        return np.isnan(self.answers).sum(1)

    @property
    def p_helps(self):
        """[P] yes / (yes + no), the soft label of the confidence-weighted BT loss; NaN where no query answered."""
        votes = self.yes + self.no
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(votes > 0, self.yes / np.maximum(votes, 1), np.nan)


def check(r: Rankings, where="rankings"):
    """Shapes and attrs agree; raises ValueError naming the first problem."""
    P = len(r.agent)
    missing = [k for k in REQUIRED_ATTRS if k not in r.attrs]
    if missing:
        raise ValueError(f"{where}: attrs {missing} missing; rebuild it with --config=lca_label")
    for name in ARRAYS:
        value = getattr(r, name)
        if len(value) != P:
            raise ValueError(f"{where}: {name} has {len(value)} rows, agent has {P}")
    n, K = int(r.attrs["n_agents"]), int(r.attrs["queries"])
    if r.actions.ndim != 2 or r.actions.shape[1] != n:
        raise ValueError(f"{where}: actions must be [P, n_agents={n}], got {list(r.actions.shape)}")
    if r.answers.ndim != 2 or r.answers.shape[1] != K:
        raise ValueError(f"{where}: answers must be [P, queries={K}], got {list(r.answers.shape)}")
    if r.obs.shape != r.next_obs.shape or list(r.obs.shape[1:]) != list(r.attrs["obs_shape"]) * (r.obs.ndim > 1):
        raise ValueError(f"{where}: obs {list(r.obs.shape)} / next_obs {list(r.next_obs.shape)} do not match "
                         f"obs_shape {r.attrs['obs_shape']}")
    ok = np.isnan(r.answers) | (r.answers == 0) | (r.answers == 1)
    if not ok.all():
        raise ValueError(f"{where}: answers must be 1, 0 or NaN; found {np.unique(r.answers[~ok])[:5].tolist()}")
    if P and (r.agent.min() < 0 or r.agent.max() >= n):
        raise ValueError(f"{where}: agent indices must lie in [0, {n}), got {r.agent.min()}..{r.agent.max()}")


def check_complete(r: Rankings, path, allow_incomplete=False):
    """None for rankings whose labeling finished (attrs `complete`; a file without it, made by code, counts as
    finished), else a line naming how many items were answered: a ConfigError saying how to finish them unless
    `allow_incomplete` (lca.allow_incomplete), then the line itself, for a warning."""
    if r.attrs.get("complete", True):
        return None
    answered = int((r.missing < r.answers.shape[1]).sum())
    stopped = (r.attrs.get("labeler_info") or {}).get("stopped")
    line = (f"the rankings {path} are incomplete: {answered} of {len(r)} items answered "
            f"({int(np.isnan(r.answers).sum())} of {r.answers.size} answers missing"
            + (f"; the labeling stopped: {stopped})" if stopped else ")"))
    if allow_incomplete:
        return line
    raise ConfigError(f"{line}. Finish them: rerun the command that ranked them with the same settings "
                      f"(--config=lca_label, or the lca_ippo / lca_mappo run without lca.rankings; raise max_requests "
                      f"/ max_cost_usd if a budget stopped it), which asks only the missing queries; or set "
                      f"lca.allow_incomplete=True to train on the {answered} answered items")


def write_rankings(path, rankings: Rankings, overwrite=False):
    """Write `rankings` to `path` atomically (readers see no file or the whole file). Returns the path."""
    check(rankings, path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; choose another folder or pass overwrite=True")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "x") as f:
            for name, dtype in ARRAYS.items():
                f.create_dataset(name, data=np.asarray(getattr(rankings, name), dtype=dtype))
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in rankings.attrs.items():
                f.attrs[k] = json.dumps(v, default=str)
    return path


def read_rankings(path) -> Rankings:
    """The rankings in `path`, checked; a clear error for a missing file, another schema or a broken layout."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"rankings file {path} does not exist; build one with --config=lca_label")
    with h5py.File(path, "r") as f:
        version = f.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: rankings schema_version {version}, this code reads {SCHEMA_VERSION}; "
                             f"rebuild it with --config=lca_label")
        absent = [k for k in ARRAYS if k not in f]
        if absent:
            raise ValueError(f"{path}: arrays {absent} missing; rebuild it with --config=lca_label")
        arrays = {k: f[k][()] for k in ARRAYS}
        attrs = {k: json.loads(v) for k, v in f.attrs.items() if k != "schema_version"}
    r = Rankings(**arrays, attrs=attrs)
    check(r, path)
    return r


def attrs_or_problem(path):
    """(attrs, None) for a rankings file of this schema, else (None, what is wrong with it: not readable as HDF5,
    attrs that are not JSON text, another schema, arrays or attrs it lacks)."""
    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("schema_version")
            absent = [k for k in ARRAYS if k not in f]
            raw = {k: v for k, v in f.attrs.items() if k != "schema_version"}
    except OSError as e:
        return None, f"it is not a readable HDF5 file, damaged or truncated ({e})"
    try:
        attrs = {k: json.loads(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        return None, f"its attrs {sorted(raw)} are not the JSON text a rankings file stores"
    lacks = absent + [k for k in REQUIRED_ATTRS if k not in attrs]
    if lacks:
        return None, f"it lacks {', '.join(lacks)}" + (f" (attr task: {attrs['task']!r})" if "task" in attrs else "")
    if version != SCHEMA_VERSION:
        return None, f"its schema_version is {version}, this code reads {SCHEMA_VERSION}"
    return attrs, None


def read_attrs(path):
    """The attrs of the rankings file `path` (no arrays read): what a run checks before it starts. ConfigError when
    the file is missing or is not a rankings file of this schema."""
    if not os.path.isfile(path):
        raise ConfigError(f"lca.rankings={path} does not exist: rank pairs with --config=lca_label (or leave "
                          f"lca.rankings empty where the run ranks them itself: lca_ippo, lca_mappo)")
    attrs, wrong = attrs_or_problem(path)
    if wrong:
        raise ConfigError(f"lca.rankings={path} is not a rankings file: {wrong}; give a rankings.h5 of "
                          f"--config=lca_label (results/rankings/<env>/<id>/rankings.h5)")
    return attrs


def rankings_hash(path):
    """SHA-256 of the file: what potentials record as the rankings they were trained on."""
    return sha256_file(path)
