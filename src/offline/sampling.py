"""Training data for offline learners (`run: offline`): the datasets a config names (`offline_dataset`, several
merged), the expert subset D_E (`offline_expert`), rewards from a label (`offline_reward`), the top fraction and the
held-out split, and the seeded episode (and preference-pair) sampler whose state goes into checkpoints."""
import json
import logging
import math
import os
import re

import numpy as np

from offline.format import DatasetError, missing_dataset
from offline.label_store import content_fingerprint, fingerprint_header, stale_derivation
from offline.reader import OfflineDataset
from utils.config import ConfigError
from utils.files import sha256_bytes
from utils.paths import unseeded
from utils.ranking import top_k


def check_dataset_file(path, key="offline_dataset"):
    """A dataset path named in the config is a file: a folder or a list the shell un-quoted is a ConfigError saying
    what to give instead (a missing file is the reader's DatasetMissing: a dataset error, not retried by sweeps)."""
    if path.lstrip().startswith("["):
        raise ConfigError(f"{key}={path} reached the run as one path, not a list: the shell removed the list's quotes. "
                          f"Quote the whole update: \"{key}=['a.h5', 'b.h5']\"")
    if os.path.isdir(path):
        inside = sorted(n for n in os.listdir(path) if n.endswith(".h5"))[:3]
        raise ConfigError(f"{key}={path} is a folder; give a dataset file"
                          + (f" in it, e.g. {os.path.join(path, inside[0])} (it has {', '.join(inside)}"
                             f"{', ...' if len(inside) == 3 else ''})" if inside else " (this folder has no .h5 file)"))


def dataset_paths(value):
    paths = [value] if isinstance(value, str) else list(value or [])
    paths = [p for p in paths if p]
    for p in paths:
        if not isinstance(p, str):
            raise ConfigError(f"offline_dataset lists {p!r}: give dataset file paths")
        check_dataset_file(p)
    seen = {}
    for p in paths:  # the same file twice would silently double every episode
        real = os.path.realpath(p)
        if real in seen:
            same = f"{p} twice" if seen[real] == p else f"{seen[real]} and {p}, one file"
            raise ConfigError(f"offline_dataset lists {same}: list each dataset once (it would double its episodes)")
        seen[real] = p
    if not paths:
        raise ConfigError("run=offline needs a dataset: with offline_dataset=path/to/data.h5 (collect one with "
                         "--config=collect, see the README's offline section)")
    return paths


def load_training_data(args, env_info, _log):
    """(train, valid or None, expert or None) datasets as the config asks for them."""
    env_args = unseeded(args.env_args)
    data, loaded = None, []
    for path in dataset_paths(args.offline_dataset):
        ds = no_episodes_refused(OfflineDataset.load(path, lazy=args.offline_lazy, expect_env=(args.env, env_args)),
                                 "offline_dataset")
        loaded.append((path, ds))
        data = ds if data is None else data.merge(ds)
    check_distinct(loaded)
    shapes = {k: int(np.prod(env_info[k])) for k in data.env_info}
    if data.env_info != shapes:
        raise DatasetError(f"the dataset's shapes {data.env_info} do not match the env's {shapes}: it was "
                           f"collected with other env settings")
    if args.offline_reward:
        if args.offline_top_fraction < 1.0:  # it ranks by the stored (ground-truth) episode_return
            raise DatasetError(f"offline_reward={args.offline_reward} with offline_top_fraction="
                               f"{args.offline_top_fraction}: the top fraction would be chosen by the dataset's true "
                               f"returns, which a learner on recovered rewards must not see; use one of the two")
        data = data.with_reward(label_rows(data, args.offline_reward, "offline_reward", _REWARD_HINT))
    expert = select_expert(data, args.offline_expert, args, env_args)
    if args.offline_top_fraction < 1.0:
        data = data.top_fraction(args.offline_top_fraction)
    valid = None
    if args.offline_valid_fraction > 0:
        n = len(data)
        data, valid = data.split(args.offline_valid_fraction, seed=args.seed)
        if len(data) == 0:
            top = (f" (offline_top_fraction={args.offline_top_fraction} kept them)" if args.offline_top_fraction < 1.0
                   else "")
            raise ConfigError(f"nothing left to train on: offline_valid_fraction={args.offline_valid_fraction} holds "
                              f"out all {n} episodes{top}; give a smaller offline_valid_fraction (at most "
                              f"{math.floor(1000 * (n - 1) / n) / 1000:g} keeps one training episode), or 0 for no "
                              f"validation")
    # with a reward label the learner trains on the label's returns; the stored ground truth is shown beside them
    mean = (f"mean return of {args.offline_reward} {data.reward_returns().mean():.3f}, ground truth "
            f"{data.returns.mean():.3f}" if args.offline_reward else f"mean return {data.returns.mean():.3f}")
    _log.info(f"Offline data: {len(data)} training episodes ({mean})"
              + (f", {len(valid)} validation" if valid is not None else "")
              + (f", {len(expert)} expert episodes (mean return {expert.returns.mean():.3f})" if expert else ""))
    return data, valid, expert


def no_episodes_refused(ds, key):
    """`ds`, loaded from the file that config key `key` names; a DatasetError when it holds no episodes (a complete
    file: a collection or import of nothing, or drop_episodes that dropped them all)."""
    if len(ds) == 0:
        ds.close()
        raise DatasetError(f"{key}: {ds.path} holds no episodes (a complete dataset file of 0 episodes): there is "
                           f"nothing to train on; collect or import episodes into a new file, or name another file")
    return ds


def _dropped_from(ds):
    """The file a dataset was made from by scripts/drop_episodes.py (its `dropped_episodes` attr), or None."""
    try:
        return os.path.realpath(json.loads(ds.attrs.get("dropped_episodes", "null") or "null")["source"])
    except (TypeError, ValueError, KeyError):
        return None


def summary_key(ds):
    """What a dataset's content fingerprint starts from and the per-episode arrays it holds in memory (env, shapes,
    episode count, quality codes, returns, agent qualities): two datasets whose keys differ have different
    fingerprints, so only datasets with equal keys need their episodes hashed."""
    return (fingerprint_header(ds),
            sha256_bytes(np.ascontiguousarray(ds.returns, dtype=np.float32).tobytes()
                         + np.ascontiguousarray(ds.quality_code_array, dtype=np.int64).tobytes()))


def check_distinct(loaded):
    """Datasets merged for training must hold different episodes: the same episodes in two files (a copy: the same
    content fingerprint, offline.label_store.content_fingerprint) or a file and one drop_episodes made from it would
    count episodes twice. `loaded`: [(path, dataset)]. The cheap summary (summary_key) is compared first; the episodes
    of a dataset are hashed only when another listed dataset has the same summary."""
    if len(loaded) < 2:
        return
    for i, (path, ds) in enumerate(loaded):
        source = _dropped_from(ds)
        for other, _ in loaded[:i] + loaded[i + 1:]:
            if source is not None and source == os.path.realpath(other):
                raise ConfigError(f"offline_dataset lists {other} and {path}, which scripts/drop_episodes.py made from "
                                  f"it (the same episodes less the dropped ones): merging would count them twice; "
                                  f"list one of them")
    by_key = {}
    for path, ds in loaded:
        by_key.setdefault(summary_key(ds), []).append((path, ds))
    for group in (g for g in by_key.values() if len(g) > 1):
        seen = {}
        for path, ds in group:
            fingerprint = content_fingerprint(ds)
            if fingerprint in seen:
                raise ConfigError(f"offline_dataset lists {seen[fingerprint]} and {path}, which hold the same episodes "
                                  f"(content fingerprint {fingerprint[:16]}...: copies of one dataset): merging would "
                                  f"count every episode twice; list one of them")
            seen[fingerprint] = path


LABEL_PREFIX = "label:"
TOP_PREFIX = "top:"
_EXPERT_HINT = ("label them with --config=label_preferences, then write <name>_expert with --config=omapl "
                "(preference_set=<name>)")
_SCORE_HINT = ("write <name>_return_hat with --config=omapl (preference_set=<name>) after labeling the pairs with "
               "--config=label_preferences")
_REWARD_HINT = ("write <name>_reward_hat with --config=marl_sl (preference_set=<name>) after labeling the pairs with "
                "--config=label_preferences")


def label_rows(data, spec, key, hint, name=None):
    """The per-episode label that `spec` = 'label:<label name>' names (rows = the dataset's episodes); `name` gives
    the label when the spec has another form (top:<name>:<K>)."""
    if name is None:
        name = spec[len(LABEL_PREFIX):]
        if not spec.startswith(LABEL_PREFIX) or not name:
            raise ValueError(f"{key}={spec}: expected 'label:<label name>'")
    if name in data.damaged_labels:
        data.label(name)  # the error naming what is wrong and the edit that removes it
    if name not in data.label_names:
        raise DatasetError(f"{key}={spec}: the dataset has no label '{name}' (labels present: "
                           f"{data.label_names or 'none'}); {hint}")
    stale = stale_derivation(data.path, name) if data.path else None
    if stale:
        set_name = data.label_attrs(name).get("preference_set")
        raise DatasetError(f"{key}={spec}: {stale}. Make it again from the current set (--config=omapl or marl_sl "
                           f"with offline_dataset={data.path} preference_set={set_name} label_overwrite=True)")
    return data.label(name)


def parse_top(spec):
    """'top:<label name>:<K>' -> (label name, K)."""
    name, _, k = spec[len(TOP_PREFIX):].rpartition(":")
    if not name or not re.fullmatch(r"[0-9]+", k) or int(k) < 1:
        raise ValueError(f"offline_expert={spec}: expected 'top:<label name>:<K>' with an integer K >= 1, e.g. "
                         f"top:oracle_s0_return_hat:400 (the 400 episodes with the highest recovered return)")
    return name, int(k)


def top_episodes(data, spec):
    """The K episodes with the highest per-episode score label (O-MAPL's <set>_return_hat): the same choice as
    O-MAPL's own top-K flags for that K, without training O-MAPL again for each K."""
    name, k = parse_top(spec)
    scores = np.asarray(label_rows(data, spec, "offline_expert", _SCORE_HINT, name=name), dtype=np.float64)
    rank_by = data.label_attrs(name).get("rank_by", "sum")
    if rank_by != "sum":  # <set>_return_hat holds the sum G; O-MAPL chose by G / length
        raise DatasetError(f"offline_expert={spec}: '{name}' comes from an O-MAPL run with omapl_rank_by={rank_by}, "
                           f"whose top K is not the top K of this label (the summed return); use "
                           f"offline_expert=label:<set>_expert for its own K, or rerun O-MAPL with omapl_rank_by=sum")
    if scores.shape != (len(data),) or not np.isfinite(scores).all():
        raise DatasetError(f"offline_expert={spec}: a score label is one finite number per episode ([{len(data)}]), "
                           f"got shape {scores.shape} with {int((~np.isfinite(scores)).sum())} non-finite values")
    if k > len(data):
        raise DatasetError(f"offline_expert={spec}: K = {k} is more than the dataset's {len(data)} episodes")
    if k == len(data):
        logging.getLogger("pymarl").warning(f"offline_expert={spec}: K = every episode of the dataset: D_E = D_U")
    return np.sort(top_k(scores, k))


def select_expert(data, spec, args, env_args):
    """D_E for learners that weight expert data: 'quality:<name>' = the episodes whose agents all have that
    ground-truth quality, 'label:<name>' = the episodes a per-episode boolean label marks (O-MAPL's top-K:
    label:<set>_expert), 'top:<name>:<K>' = the K episodes with the highest score label (O-MAPL's
    <set>_return_hat, for another K than it was trained with), or the path of a separate dataset."""
    if not spec:
        return None
    if spec.startswith(TOP_PREFIX):
        return data.subset(top_episodes(data, spec))
    if spec.startswith(LABEL_PREFIX):
        flags = np.asarray(label_rows(data, spec, "offline_expert", _EXPERT_HINT))
        if flags.shape != (len(data),) or not np.isin(flags, (0, 1)).all():
            raise DatasetError(f"offline_expert={spec}: an expert label is one 0/1 flag per episode ([{len(data)}]), "
                               f"got shape {flags.shape} with values {np.unique(flags)[:5]}")
        rows = np.flatnonzero(flags)
        if len(rows) == 0:
            raise DatasetError(f"offline_expert={spec}: the label marks no episode")
        return data.subset(rows)
    if spec.startswith("quality:"):
        name = spec.split(":", 1)[1]
        if name not in data.quality_codes:
            raise DatasetError(f"offline_expert={spec}: the dataset has no quality '{name}' "
                               f"(it has {sorted(data.quality_codes)})")
        rows = np.flatnonzero((data.quality_code_array == data.quality_codes[name]).all(axis=1))
        if len(rows) == 0:
            raise DatasetError(f"offline_expert={spec}: no episode in the dataset has all agents '{name}'")
        return data.subset(rows)
    if not os.path.exists(spec):
        guess = re.match(r"^(quality|label|top)[_\-.=]?(.+)$", spec)
        raise missing_dataset(f"offline_expert={spec}", "offline_expert is quality:<name>, label:<name>, "
                              "top:<name>:<K> or the path of a dataset"
                              + (f" (did you mean '{guess.group(1)}:{guess.group(2)}'?)" if guess else ""))
    check_dataset_file(spec, "offline_expert")
    return no_episodes_refused(OfflineDataset.load(spec, lazy=args.offline_lazy, expect_env=(args.env, env_args)),
                               "offline_expert")


class Sampler:
    """Episode batches drawn from the datasets with one seeded generator (saved in checkpoints)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def batch(self, dataset, batch_size, device):
        sample = dataset.sample(batch_size, rng=self.rng)
        sample = sample[:, : sample.max_t_filled()]
        return sample.to(device) if device != "cpu" else sample

    def initial(self, dataset, batch_size, device):
        """The first step (initial obs/state) of `batch_size` episodes: a one-step EpisodeBatch (DICE's s0 batch)."""
        sample = dataset.sample(batch_size, rng=self.rng)[:, :1]
        return sample.to(device) if device != "cpu" else sample

    def pairs(self, preferences, n_pairs, device):
        """A PairBatch of `n_pairs` labeled pairs (offline.preferences.PreferencePairs)."""
        return preferences.sample(n_pairs, self.rng, device)
