"""Generated datasets, written atomically and resumably (CODI's generation output).

`generate_dataset` stitches episodes (stitching.py) in seeded parts of `part_size` episodes: part k is seeded by
(seed, k) alone, so it is the same whether or not earlier parts ran in this process. Each finished part is written
atomically (temp + rename) to `<out>.parts/part_<k>.npz`, beside a `spec.json` naming the generation (settings,
sampling, the source's content fingerprint, model hashes). The dataset file is assembled only when every part
exists, through DatasetWriter (its own temp + rename), and the parts folder is removed afterwards. So an interrupted
run leaves no file a reader accepts (parts are not HDF5 datasets), and a rerun skips the finished parts and writes
exactly the file an uninterrupted run writes (the same arrays; attrs differ only in `created`). A rerun with other
settings, models or source is refused by name instead of mixing parts. Generation only reads the source file.

The file: the source's env, env_args and shapes; obs from the model (denormalised), state / avail_actions /
terminals from the env hooks, actions = â, reward = r̂, episode_return = Σr̂, every agent's quality `generated`;
attrs `generated` (true), `augmenter`, `source_path`, `source_sha256` (the file's bytes when generation started),
`source_fingerprint` (its episodes: offline.label_store.content_fingerprint), `model_hashes` (JSON), `sampling`
(JSON: guidance, weights, sampler, steps), `generation` (JSON: the counters summed over parts, pass rate, target RTG
and the Σr̂ statistics, the source's return range and, as counters return_above_source / return_below_source, the
generated episodes whose Σr̂ lies outside it: said as a warning too).

Decision: r̂ is stored as f_rwd gives it, not clipped to the source's per-step reward range. Measured on LBF 8x8 2p 2f
coop (imbalanced_1e, noisy-0.8 labels, dim 16, 400 training steps, δ = 0.8, 200 episodes, 2026-12-07): every
generated episode's Σr̂ (mean 1.85, 1.25-2.33) exceeds the real returns (<= 1.0), yet each step's r̂ lies in
[-0.08, 0.30], inside the real steps' [0, 0.5]: Σr̂ is 50 small payments where the env pays 0.5 twice at most.
Clipping each step to [0, 0.5] would raise the mean to 2.03 (the negative steps go), so it does not bound Σr̂, and it
would change f_rwd's output, which the paper keeps. Episodes outside the source's returns are counted and named
instead, so a user can drop them (their Σr̂ is their stored episode_return).
"""
import json
import logging
import os
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass

import h5py
import numpy as np
import torch as th

from augmenters.codi.stitching import COUNTERS, GenerationError, StitchSettings, check_hooks, resolve_target_rtg, stitch
from offline.format import to_json
from offline.label_store import content_fingerprint
from offline.reader import OfflineDataset
from offline.writer import DatasetWriter
from utils.files import FolderLock, atomic_path, clean_stale_temps, sha256_file, write_json_atomic
from utils.progress import Bar, Clock, time_str

QUALITY = "generated"


@dataclass
class GenerationSettings:
    n_episodes: int
    horizon: int
    target_rtg: object      # a number (env units) or "quantile:q" of the source's episode returns
    delta: float
    seed: int = 0
    part_size: int = 1000
    batch_size: int = 64
    max_resamples: int = 4
    max_attempts: int = 2000
    max_view_gap: float | None = None  # off (None) or the largest view gap a passing segment may have (stitching.py)
    snap_obs: bool = False  # generated observations snapped by the env hook before the checks (stitching.py)
    delta_quantile: float | None = None  # delta=auto's quantile, None when delta was given (the advice when stuck)

    def identity(self):
        """The settings that decide the output: asdict, less max_view_gap and snap_obs while they are off, so that
        parts and files made before the options existed are still recognised as the same generation, and less
        delta_quantile (delta's value decides)."""
        d = asdict(self)
        d.pop("delta_quantile")
        if d["max_view_gap"] is None:
            d.pop("max_view_gap")
        if not d["snap_obs"]:
            d.pop("snap_obs")
        return d


def parts_folder(out_path):
    return os.fspath(out_path) + ".parts"


def part_seeds(seed, k):
    """(numpy Generator for the o_0 choices, torch seed for the sampler's noise) of part k."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(k), 0]))
    torch_seed = int(np.random.SeedSequence([int(seed), int(k), 1]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return rng, torch_seed


def generate_dataset(out_path, source_path, sampler, dynamics, normaliser, hooks, settings, augmenter,
                     model_hashes=None, config=None, device="cpu", log=None, sampling=None, log_every_s=60.0):
    """Write a generated dataset at `out_path` from the models (protocols: stitching.py); returns a summary dict
    (path, counters, pass rate, Σr̂ statistics, parts written/reused). Raises GenerationError when nothing passes
    (no file written; finished parts are kept for a rerun with the same settings). `sampling`: what else decides
    the samples (guidance mode and weights, sampler, steps): part of the parts' spec, so parts made with other
    values are never mixed in, and stored as the attr `sampling`. Progress: a bar over the episodes on a terminal,
    and a log line every `log_every_s` seconds (episodes, rate, time left, pass rate, dropped trajectories)."""
    log = log or logging.getLogger("augmenters.codi")
    out_path, source_path = os.path.abspath(os.fspath(out_path)), os.path.abspath(os.fspath(source_path))
    if os.path.realpath(out_path) == os.path.realpath(source_path):
        raise ValueError(f"the generated dataset would overwrite its source {source_path}: choose another path")
    if os.path.exists(out_path):
        raise FileExistsError(f"{out_path} exists; generation never overwrites a dataset: delete it or choose "
                              f"another output path")
    if settings.part_size < 1:
        raise ValueError(f"part_size must be >= 1, got {settings.part_size}")
    source = _read_source(source_path)
    target = resolve_target_rtg(settings.target_rtg, source["returns"])
    info = source["env_info"]
    check_hooks(hooks, source["initial_obs"], info, view_gap=settings.max_view_gap is not None,
                snap=settings.snap_obs)
    StitchSettings(settings.n_episodes, settings.horizon, info["episode_limit"], target, float(settings.delta),
                   settings.batch_size, settings.max_resamples, settings.max_attempts, settings.max_view_gap,
                   settings.snap_obs).check()
    # the source by its episodes (content fingerprint), not its bytes: labeling rewrites the file in place (a
    # labels/ group added) without changing an episode, and must not invalidate finished parts
    spec = {"settings": settings.identity(), "target_rtg": target, "source_fingerprint": source["fingerprint"],
            "model_hashes": dict(model_hashes or {}), "augmenter": augmenter, "env": source["env"],
            "env_args": source["env_args"], "sampling": dict(sampling or {})}
    folder = parts_folder(out_path)
    bar = None
    lock = FolderLock.try_acquire(folder)
    if lock is None:
        raise GenerationError(f"another process is generating into {folder}; wait for it or choose another output "
                              f"path", repeats_on_retry=False)
    try:
        clean_stale_temps(folder)  # parts of a run killed mid-write
        _check_spec(folder, spec)
        n_parts = -(-settings.n_episodes // settings.part_size)
        for k in range(n_parts):  # a damaged finished part is named now, not after the missing ones are made
            if os.path.exists(_part_path(folder, k)):
                _read_part(_part_path(folder, k))
        written = 0
        done = sum(_part_episodes(settings, k) for k in range(n_parts) if os.path.exists(_part_path(folder, k)))
        bar = Bar(settings.n_episodes, initial=done, desc="generate", unit="episode")
        clock, last_line = Clock(done, settings.n_episodes), [time.time()]

        def progress(counters, before):
            n = before + counters["episodes"]
            rate = counters["accepted"] / max(1, counters["segments"])
            bar.update_to(n)
            bar.set_postfix(pass_rate=f"{rate:.3f}", dropped=counters["dropped"])
            if time.time() - last_line[0] >= log_every_s:
                last_line[0] = time.time()
                per_min = 60 * clock.rate(n)  # episodes are slow: per minute, not Clock.line's whole units per second
                log.info(f"generation: {n} / {settings.n_episodes} episodes ({100 * n / settings.n_episodes:.0f}%), "
                         f"{time_str(clock.elapsed())} elapsed, {clock.left_str(n)}, "
                         f"{per_min:.3g} episodes/min; this part: pass rate {rate:.3f}, {counters['dropped']} "
                         f"trajectories dropped")

        for k in range(n_parts):
            path = _part_path(folder, k)
            if os.path.exists(path):
                continue
            n = _part_episodes(settings, k)
            rng, torch_seed = part_seeds(settings.seed, k)
            generator = th.Generator(device=th.device(device)).manual_seed(torch_seed)
            part = StitchSettings(n, settings.horizon, info["episode_limit"], target, float(settings.delta),
                                  settings.batch_size, settings.max_resamples, settings.max_attempts,
                                  settings.max_view_gap, settings.snap_obs, settings.delta_quantile)
            arrays, counters = stitch(sampler, dynamics, normaliser, hooks, source["initial_obs"], part, rng,
                                      generator, device, progress=lambda c, before=done: progress(c, before))
            _write_part(path, arrays, counters)
            written += 1
            done += n
            log.info(f"generation part {k + 1}/{n_parts}: {n} episodes, pass rate "
                     f"{counters['accepted']}/{counters['segments']}, {counters['dropped']} trajectories dropped")
        arrays, counters = _read_parts(folder, n_parts)
        if content_fingerprint(source_path) != source["fingerprint"]:
            raise GenerationError(f"the episodes of the source {source_path} changed during generation: delete "
                                  f"{folder} (its parts come from the old episodes) and generate again")
        summary = _summary(counters, arrays, target, n_parts, source["returns"])
        writer_config = {**dict(config or {}), "generation": settings.identity(), "truncation_as_terminal": False}
        attrs = {"generated": True, "augmenter": augmenter, "source_path": source_path,
                 "source_sha256": source["sha256"], "source_fingerprint": source["fingerprint"],
                 "model_hashes": to_json(dict(model_hashes or {})), "sampling": to_json(dict(sampling or {})),
                 "generation": to_json(summary)}
        provenance = [{"file": os.path.basename(out_path), "env": source["env"], "n_episodes": settings.n_episodes,
                       "generated_from": source_path, "augmenter": augmenter}]
        with DatasetWriter(out_path, info, source["env"], source["env_args"], writer_config, provenance=provenance,
                           attrs=attrs) as w:
            w.add_arrays(arrays, qualities=QUALITY)
    finally:
        if bar is not None:
            bar.close()
        lock.release()
    shutil.rmtree(folder, ignore_errors=True)
    log.info(f"generated {settings.n_episodes} episodes into {out_path} (pass rate {summary['pass_rate']:.2%}, "
             f"mean return {summary['return_mean']:.4g} vs target {target:.4g})")
    outside = outside_message(summary)
    if outside:
        (getattr(log, "warning", None) or log.info)(outside)
    return {"path": out_path, **summary, "parts_written": written, "parts_reused": n_parts - written}


def _read_source(path):
    """What generation needs of the source: env, env_args, env info, episode returns, first observations, SHA."""
    ds = OfflineDataset.load(path, lazy=True)  # validates the layout and attrs; content is read below
    try:
        out = {"env": ds.attrs["env"], "env_args": json.loads(ds.attrs["env_args"]), "env_info": dict(ds.env_info),
               "returns": np.asarray(ds.returns, dtype=np.float64)}
    finally:
        ds.close()
    with h5py.File(path, "r") as f:  # only the first step of each episode: Fletcher32 checks these chunks on read
        out["initial_obs"] = np.asarray(f["obs"][:, 0], dtype=np.float32)
    if len(out["initial_obs"]) == 0:
        raise ValueError(f"{path} has no episodes to take initial observations from")
    out["sha256"] = sha256_file(path)  # provenance: the file as generation started
    out["fingerprint"] = content_fingerprint(path)
    return out


def _check_spec(folder, spec):
    path = os.path.join(folder, "spec.json")
    want = json.loads(to_json(spec))
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            have = json.load(f)
        if have != want:
            differ = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise GenerationError(f"{folder} holds the parts of another generation (it differs in {differ}); "
                                  f"delete that folder to start over, or rerun with the same settings and models")
        return
    write_json_atomic(path, want)


def _part_episodes(settings, k):
    """Episodes in part k (the last part holds the remainder)."""
    return min(settings.part_size, settings.n_episodes - k * settings.part_size)


def _part_path(folder, k):
    return os.path.join(folder, f"part_{k:05d}.npz")


def _write_part(path, arrays, counters):
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:
            np.savez(f, counters=np.array(json.dumps(counters)), **arrays)
            f.flush()
            os.fsync(f.fileno())


def _read_part(path):
    """(arrays, counters) of a finished part; a damaged one (truncated: a zip error; unreadable) is a
    GenerationError naming it and the fix."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return ({key: z[key] for key in z.files if key != "counters"},
                    {key: int(v) for key, v in json.loads(str(z["counters"])).items()})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise GenerationError(f"generation part {path} cannot be read ({e}); delete it and rerun (it is "
                              f"generated again)") from e


def _read_parts(folder, n_parts):
    arrays, counters = [], dict.fromkeys(COUNTERS, 0)
    for k in range(n_parts):
        part, counts = _read_part(_part_path(folder, k))
        arrays.append(part)
        for key, v in counts.items():
            counters[key] = counters.get(key, 0) + v
    return {key: np.concatenate([a[key] for a in arrays]) for key in arrays[0]}, counters


def outside_message(summary):
    """The warning about generated returns (Σr̂) outside the source's returns, or "" when every one lies inside."""
    counters, (lo, hi) = summary["counters"], summary["source_return_range"]
    above, below = counters["return_above_source"], counters["return_below_source"]
    if not above and not below:
        return ""
    return (f"{above + below} of {counters['episodes']} generated episodes have a return (Σr̂, the reward model's) "
            f"outside the source's returns [{lo:.4g}, {hi:.4g}]: {above} above, {below} below (Σr̂ from "
            f"{summary['return_min']:.4g} to {summary['return_max']:.4g}); the env never paid such returns on the "
            f"source, so f_rwd over- or under-pays there, and learners that rank episodes by return (50%BC) favour "
            f"or drop them. Recorded as generation.counters return_above_source / return_below_source")


def _summary(counters, arrays, target, n_parts, source_returns):
    returns = arrays["reward"].reshape(len(arrays["reward"]), -1).astype(np.float64).sum(1)
    lengths = arrays["filled"].reshape(len(arrays["filled"]), -1).sum(1) - 1
    lo, hi = float(np.min(source_returns)), float(np.max(source_returns))
    tol = 1e-6 * max(1.0, hi - lo)  # float32 sums of rewards that add up to a real return
    counters = {**counters, "return_above_source": int((returns > hi + tol).sum()),
                "return_below_source": int((returns < lo - tol).sum())}
    return {"counters": counters, "parts": n_parts, "target_rtg": target, "source_return_range": [lo, hi],
            "pass_rate": counters["accepted"] / max(1, counters["segments"]),
            "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "return_min": float(returns.min()), "return_max": float(returns.max()),
            "return_minus_target_mean": float((returns - target).mean()),
            "length_mean": float(lengths.mean())}
