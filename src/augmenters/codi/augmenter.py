"""The CODI pipeline and its baselines as augmenters (REGISTRY in augmenters/__init__.py), run in stages by
`run: augment` (src/run/augment.py):

    labeler   fit the GRU labeler (labeler.py) on the dataset's given labels labels/<augment_label_name> (the LLM's,
              or an oracle's), label every segment start and store labels/codi_z_<labeler hash> [E, T+1, n] in the
              dataset file (offline.label_store.write_episode_labels: atomic, fingerprinted); report its accuracy
              vs the given labels of its validation rows (held out from its training) and vs the ground truth at
              every start, with confusion matrices
    train     the segment diffusion model (diffusion.py) and the dynamics/reward models (dynamics.py) in one loop on
              the same segment batches (Algorithm 1); checkpoints resume exactly; periodic losses, inverse-model
              accuracy and real pass rate on held-out episodes
    generate  δ (`delta: auto` = a quantile of the dynamics error on held-out real transitions, or a number), then
              stitched episodes (stitching.py, generation.py) into a new HDF5 dataset

Variants differ only in the labels the diffusion model is conditioned on and the guidance at sampling time (same
network, steps and guidance weights):

    codi             distilled labels codi_z_<hash>, guidance compose (Eq. 8)
    codi_no_comp     distilled labels codi_z_<hash>, guidance all_ones (the paper's "w/o comp.")
    codi_privileged  one-hot ground-truth labels (the one expert of agent_quality), guidance compose
    madiff_like      no labels (R only), guidance return_only

Artifacts: results/augment/<augmenter>/<env label>/<id>/ with id a hash of the source episodes, the given labels and
the training settings (not train_steps: a longer run continues the folder), so rerunning a command continues its
own folder: labeler.pt, train/checkpoint.pt, models/{diffusion.pt, dynamics.pt, normaliser.json,
scheduler_config.json}, labeler_report.md, meta.json (env, shapes, hashes, settings, counters of every stage) and
the generated datasets generated_<settings hash>.h5 (or `augment_out`).

Decisions (issue 15's "decide and document"; the model-level ones are in diffusion.py and dynamics.py):
- One H throughout: the given labels must judge segments of this run's segment_horizon (refused otherwise), the
  labeler reads H-step segments, the diffusion model makes them and stitching adds H-1 transitions per segment.
- Labeler inputs: each agent's own observation and action one-hot over the segment's real transitions (labeler.py).
- The distilled labels are named after the labeler that made them, labels/codi_z_<first 12 hex digits of its
  weights' SHA-256> (attr labeler_sha256; meta.json's labeler.label names them), so runs with other labelers on the
  same source (another seed, other given labels, another artifact folder) keep their labels side by side and never
  replace each other's; runs whose labelers are equal share one set (the same labels). The name is CODI's
  (`writes_labels`: the label run refuses codi_z and codi_z_*); labels of that name that anything else wrote are
  refused, naming scripts/edit_labels.py --rename-label, never overwritten. Folders of earlier versions read their
  labels/codi_z (one per source then) as long as its labeler_sha256 is theirs.
- augment_checkpoint (generating from another folder's models) builds the models from that folder's meta.json
  settings (diffusion size, steps, horizon, dynamics width, the held-out split, batch size, labeler settings, trained
  step count): settings this run gives that differ are named in a warning and not used. A source other than the one
  the models were trained on is a warning too.
- The trained step count is compared, never silently mismatched: a folder trained further than augment_train_steps
  is refused (a shorter run cannot be taken from it; the error names the folder and how to get a fresh one), and
  generating from this run's own folder before its training reached augment_train_steps is refused too.
- Held-out episodes (augment_valid_fraction, seeded) are not trained on: they measure f_inv's accuracy and the real
  pass rate while training and calibrate `delta: auto` (default the 0.95 quantile of the per-step error).
- The dynamics models are trained alongside the diffusion model (same loop, same segment batches, own optimiser).
- Defaults: target_rtg quantile:0.9 of the source's returns (a return the data reaches; never from reference
  datasets), M = max_resamples 4, o_0 = the first observation of a random source episode (stitching.py).
- A resumed training keeps the data statistics of its checkpoint (normaliser, returns scale, reward statistics)
  and continues the batch RNG, so an interrupted run ends with the same weights as an uninterrupted one; the
  training noise RNG is device-specific, so resume on the device that trained (generation works on any device).
"""
import copy
import hashlib
import json
import os
import time
from types import SimpleNamespace

import numpy as np
import torch as th

from augmenters.base import Augmenter
from augmenters.codi.dynamics import DynamicsModels, reward_stats, segment_avail, segment_batch
from augmenters.codi.given_labels import given_labels
from augmenters.codi.labeler import (
    AgentQualityLabeler,
    label_all_starts,
    labeler_report,
    labelled_segments,
    preset,
    report_markdown,
)
from augmenters.codi.normaliser import ObsNormaliser
from augmenters.codi.settings import LABELER_KEYS
from augmenters.codi.views import ViewProjection, checked_projection
from offline.format import DatasetError, to_json
from offline.label_store import content_fingerprint, edit_command, episode_label_attrs, write_episode_labels
from offline.reader import OfflineDataset
from offline.segments import all_starts, episode_lengths, returns_to_go, segments
from utils.config import ConfigError
from utils.files import atomic_path, sha256_bytes, write_json_atomic, write_text_atomic
from utils.paths import unseeded

CODI_Z = "codi_z"  # the distilled labels: labels/codi_z_<labeler hash[:12]> (labels/codi_z: earlier versions')
META = "meta.json"
META_FORMAT = "codi_augment/1"
VALID_SEGMENTS = 512  # held-out real segments for the dynamics accuracy, the real pass rate and delta: auto


def z_label(labeler_sha256):
    """The dataset label of the labeler with these weights: codi_z_<first 12 hex digits>."""
    return f"{CODI_Z}_{labeler_sha256[:12]}"


# the config keys of the trained models' settings (AugmentSettings fields, or entries of its dict fields model and
# labeler) that generating from augment_checkpoint takes from its meta.json; (field, entry or None)
TRAINED_KEYS = {"diffusion_dim": ("model", "dim"), "diffusion_dim_mults": ("model", "dim_mults"),
                "diffusion_timesteps": ("model", "n_timesteps"), "augment_lr": ("model", "lr"),
                "ema_decay": ("model", "ema_decay"), "label_drop": ("model", "label_drop"),
                "p_uncond": ("model", "p_uncond"), "label_keep_one": ("model", "label_keep_one"),
                "segment_horizon": ("horizon", None), "dynamics_hidden": ("dynamics_hidden", None),
                "dynamics_lr": ("dynamics_lr", None), "augment_valid_fraction": ("valid_fraction", None),
                "augment_batch_size": ("batch_size", None),
                **{key: ("labeler", entry) for key, entry in LABELER_KEYS.items()}}


def adopt_trained(settings, trained, steps=None):
    """`settings` with the model settings of a trained folder's meta.json (`trained`: its "settings"; `steps`: the
    steps its models were trained), and the [(config key, this run's value, the folder's)] that differed. The
    held-out split's seed is the folder's too (the episodes its models never saw); generation keeps this run's
    seed."""
    s = copy.deepcopy(settings)
    differ = []
    if steps is not None and steps != s.train_steps:
        differ.append(("augment_train_steps", s.train_steps, steps))
        s.train_steps = steps
    for key, (name, entry) in TRAINED_KEYS.items():
        ours = getattr(s, name) if entry is None else getattr(s, name).get(entry)
        theirs = trained.get(name) if entry is None else trained.get(name, {}).get(entry)
        if entry == "label_keep_one":  # in the settings only when on
            ours, theirs = ours or 0.0, theirs or 0.0
        if theirs is None or ours == theirs:
            continue
        differ.append((key, ours, theirs))
        if entry is None:
            setattr(s, name, theirs)
        elif entry == "label_keep_one" and not theirs:
            s.model.pop(entry, None)
        else:
            getattr(s, name)[entry] = theirs
    s.seed = int(trained.get("seed", s.seed))
    return s, differ


def require_trained(folder, meta):
    """augment_checkpoint's folder must hold finished models (its meta.json has "train")."""
    if "train" not in meta:
        raise ConfigError(f"augment_checkpoint={folder} holds no trained models (its train stage did not finish): "
                          f"rerun the command that made it, which continues its training")


def check_files(config):
    """Before the run (run/preflight.py), as ConfigError: augment_checkpoint is an artifact folder with trained
    models; augment_out is neither the source dataset nor an existing dataset that generation did not write."""

    folder, out, source = config.get("augment_checkpoint"), config.get("augment_out"), config.get("offline_dataset")
    if folder:
        meta_path = os.path.join(folder, META)
        meta = None
        if os.path.isfile(meta_path):
            try:
                with open(meta_path, encoding="utf-8") as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                meta = None
        if not os.path.isdir(folder) or not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
            what = "does not exist" if not os.path.exists(folder) else f"has no {META} of format {META_FORMAT}"
            raise ConfigError(f"augment_checkpoint={folder} {what}: give an artifact folder "
                              f"results/augment/<augmenter>/<env>/<id> whose training finished (info.json's "
                              f"augment.artifacts of that run)")
        require_trained(folder, meta)
    if out and isinstance(source, str) and source and os.path.exists(out) and os.path.exists(source) and \
            os.path.samefile(out, source):
        raise ConfigError(f"augment_out={out} is the source dataset (offline_dataset): generation writes a new file; "
                          f"choose another augment_out, or leave it empty for one in the artifact folder")
    if out and os.path.isdir(out):
        raise ConfigError(f"augment_out={out} is a folder: give the path of the dataset file to write, e.g. "
                          f"{os.path.join(out, 'generated.h5')}")
    if out and os.path.exists(out) and not _is_generated(out):
        raise ConfigError(f"augment_out={out} exists and is not a dataset that CODI generated: generation never "
                          f"writes over it; choose another augment_out")


def _is_generated(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("generated", False))
    except OSError:
        return False


def state_hash(obj):
    """SHA-256 (hex) of a nested state (dicts, lists, tensors, arrays, plain values) by content: names, dtypes,
    shapes and values, so equal weights hash equally whatever torch.save's byte layout (it is not canonical)."""
    h = hashlib.sha256()

    def walk(x, name):
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k], f"{name}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{name}/{i}")
        elif th.is_tensor(x) or isinstance(x, np.ndarray):
            a = x.detach().cpu().contiguous().numpy() if th.is_tensor(x) else np.ascontiguousarray(x)
            h.update(f"{name}|{a.dtype}|{a.shape}|".encode())
            h.update(a.tobytes())
        else:
            h.update(f"{name}={x!r}|".encode())

    walk(obj, "")
    return h.hexdigest()


def _save_torch(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        th.save(obj, tmp)


class GuidedSampler:
    """stitching's sampler protocol over a SegmentDiffusion: sample(o0, R, generator) with this variant's guidance."""

    def __init__(self, diffusion, guidance, weights, sampler, n_steps, project=None):
        self.diffusion, self.guidance, self.weights = diffusion, guidance, weights
        self.sampler, self.n_steps, self.project = sampler, n_steps, project

    def sample(self, o0, R, generator):
        return self.diffusion.sample(o0, R, guidance=self.guidance, guidance_weights=self.weights,
                                     sampler=self.sampler, n_steps=self.n_steps, generator=generator,
                                     project=self.project)


class CodiAugmenter(Augmenter):
    """One augment run's pipeline. `dataset`: the source OfflineDataset (in memory, checked against the config's env
    by the caller); `hooks`: the env (state_from_obs, ...); `stat(key, value, step)`: the run's Logger.log_stat;
    `checkpoint`: an artifact folder to generate from (augment_checkpoint) instead of this run's own."""

    name = "codi"
    labels = "distilled"  # distilled (labels/codi_z_<hash>) | privileged (ground truth one-hot) | none
    guidance = "compose"
    # the labels the augmenters write into their source dataset (fnmatch patterns): the label run refuses these
    # label_names (codi_z: the name of earlier versions, still read)
    writes_labels = (CODI_Z, f"{CODI_Z}_*")

    def __init__(self, settings, source_path, dataset, env_config, results_dir, env_label, hooks, device="cpu",
                 log=None, stat=None, checkpoint="", out="", warn=None):
        self.s, self.source_path, self.env_config = settings, os.path.abspath(source_path), env_config
        self.hooks, self.device, self.out = hooks, th.device(device), out
        self.log = log or (lambda msg: None)
        self.warn = warn or self.log
        self.stat = stat or (lambda key, value, step: None)
        self._set_dataset(dataset)
        self.fingerprint = content_fingerprint(dataset)
        # what a run from augment_checkpoint should warn about: [(config key, this run's value, the models')] of
        # the settings taken from the folder, and whether the folder's source differs from this run's
        self.adopted, self.other_source, self.from_checkpoint = [], None, bool(checkpoint)
        # the real path: a results folder reached through a symlink (a worktree, a scratch mount) is recorded
        # (info.json, the generated file's path) as where it is, so the records stay valid from any checkout
        if checkpoint:
            self.folder = os.path.realpath(checkpoint)
            trained = self._check_checkpoint(self.folder)
            self.s, self.adopted = adopt_trained(self.s, trained["settings"], trained["train"]["steps"])
            if trained.get("source", {}).get("content_fingerprint") != self.fingerprint:
                self.other_source = trained.get("source", {}).get("path") or "another dataset"
        else:
            self.folder = os.path.realpath(os.path.join(results_dir, "augment", self.name, env_label, self.run_id()))
        K, steps = self.s.model["n_timesteps"], self.s.generation["sampling_steps"]
        if steps > K:  # the models' K (augment_checkpoint's) can be fewer than this run's
            raise ConfigError(f"sampling_steps={steps} is more than the models' diffusion_timesteps={K} (of "
                              f"{self.folder}): choose sampling_steps <= {K}")
        info = self.env_info
        if self.s.horizon > info["episode_limit"]:
            raise ConfigError(f"segment_horizon={self.s.horizon} is longer than the episode limit "
                              f"{info['episode_limit']} of {source_path}: choose segment_horizon <= "
                              f"{info['episode_limit']}")
        self.meta = self._read_meta(self.folder) or {}

    # ------------------------------------------------------------------ data
    def _set_dataset(self, dataset):
        self.dataset = dataset
        self.arrays = dataset.arrays()
        self.env_info = dict(dataset.env_info)

    def _given_labels(self):
        return given_labels(self.dataset, self.arrays, self.source_path, self.s.label_name, self.s.horizon,
                            self.fingerprint, self.env_config, self.name)

    def privileged_labels(self):
        """[E, T+1, n]: the one expert's one-hot at every step; refuses data that is not one-expert everywhere."""
        ds = self.dataset
        experts = ds.one_expert_agent()
        if (experts < 0).any():
            names = {v: k for k, v in ds.quality_codes.items()}
            expert = ds.quality_codes.get("expert")
            counts = (ds.quality_code_array == expert).sum(1) if expert is not None else np.zeros(len(ds), int)
            spread = {int(k): int(v) for k, v in zip(*np.unique(counts, return_counts=True))}
            present = sorted({names.get(int(c), f"code {int(c)}") for c in np.unique(ds.quality_code_array)})
            raise ConfigError(f"codi_privileged conditions on the ground-truth expert, so every episode needs exactly "
                             f"one agent of quality 'expert'; {self.source_path} has qualities {present} and "
                             f"episodes by number of expert agents {spread}. Use --config=codi (labels distilled "
                             f"from --config=label_agent_quality with labeler=llm) or madiff_like for such data")
        n, T1 = self.env_info["n_agents"], self.env_info["episode_limit"] + 1
        z = np.zeros((len(ds), T1, n), np.float32)
        z[np.arange(len(ds)), :, experts] = 1.0
        return z

    def conditions(self):
        """z [E, T+1, n] the diffusion model is trained on, or None (madiff_like)."""
        if self.labels == "none":
            return None
        if self.labels == "privileged":
            return self.privileged_labels()
        name = self.own_label()
        return np.asarray(self.arrays["labels/" + name], np.float32)

    def own_label(self, check=True):
        """The name of this folder's distilled labels in the source (labels/codi_z_<hash> of its labeler; a folder
        of an earlier version: labels/codi_z when its labeler_sha256 is the folder's). check=True: ConfigError
        naming what to run when the folder has no fitted labeler or the source lacks its labels; check=False:
        None then."""
        done = self.meta.get("labeler") or {}
        sha = done.get("labeler_sha256")
        if sha is None:
            if not check:
                return None
            raise ConfigError(f"the artifact folder {self.folder} has no fitted labeler yet (its labeler stage has not "
                              f"run): run the labeler stage first (augment_stage=labeler, or augment_stage=all)")
        for name in (done.get("label"), z_label(sha), CODI_Z):
            if name and name in self.dataset.label_names and \
                    self.dataset.label_attrs(name).get("labeler_sha256") == sha:
                return name
        if not check:
            return None
        raise ConfigError(f"{self.source_path} has no labels/{done.get('label') or z_label(sha)}, the labels of the "
                          f"labeler fitted in {self.folder} (a copy of the source made before, or labels removed "
                          f"since): run the labeler stage again (augment_stage=labeler or all), which labels the "
                          f"source with that labeler")

    def split(self):
        """(train episodes, held-out episodes): seeded; the held-out ones calibrate δ and measure the dynamics."""
        E = len(self.dataset)
        n_valid = int(round(self.s.valid_fraction * E))
        if E < 2 or n_valid < 1 or n_valid >= E:
            fix = ("use a larger dataset" if E < 2 else "raise augment_valid_fraction" if n_valid < 1
                   else "lower augment_valid_fraction")
            raise ConfigError(f"{self.source_path} has {E} episodes: too few for a held-out split of "
                              f"{self.s.valid_fraction:.0%} (augment_valid_fraction); {fix}")
        order = np.random.default_rng([self.s.seed, 7]).permutation(E)
        return np.sort(order[n_valid:]), np.sort(order[:n_valid])

    def starts_of(self, episodes):
        filled = np.asarray(self.arrays["filled"])
        starts = all_starts(filled[episodes])
        starts[:, 0] = np.asarray(episodes)[starts[:, 0]]
        return starts

    def valid_segments(self, normaliser):
        """Held-out real segments (a seeded subset): (x [B, H, n, O] on the device, step_valid, avail)."""
        _, valid_eps = self.split()
        starts = self.starts_of(valid_eps)
        rng = np.random.default_rng([self.s.seed, 11])
        if len(starts) > VALID_SEGMENTS:
            starts = starts[np.sort(rng.choice(len(starts), VALID_SEGMENTS, replace=False))]
        seg = segments(self.arrays, self.s.horizon, starts)
        batch = segment_batch(seg, normaliser, device=self.device, avail_actions=segment_avail(self.arrays, seg))
        batch["R"] = th.as_tensor(seg.rtg, device=self.device)
        return batch

    # ------------------------------------------------------------------ identity and artifacts
    def run_id(self):
        given = None
        if self.labels == "distilled" and self.s.label_name in self.dataset.label_names:
            given = sha256_bytes(np.ascontiguousarray(self.arrays["labels/" + self.s.label_name]).tobytes())
        ident = {"augmenter_labels": self.labels, "fingerprint": self.fingerprint, "given_labels": given,
                 "env": self.dataset.attrs["env"], "env_args": json.loads(self.dataset.attrs["env_args"]),
                 "settings": self.s.training_identity()}
        if self.labels != "distilled":  # no labeler: its settings and the given labels' name do not matter
            for k in ("labeler", "label_name"):
                ident["settings"].pop(k)
        return sha256_bytes(json.dumps(ident, sort_keys=True, default=str))[:12]

    def _read_meta(self, folder):
        path = os.path.join(folder, META)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _write_meta(self, **stage):
        self.meta.update({"format": META_FORMAT, "augmenter": self.meta.get("augmenter", self.name),
                          "labels": self.labels, "env": self.dataset.attrs["env"],
                          "env_args": json.loads(self.dataset.attrs["env_args"]), "env_info": self.env_info,
                          # the source the folder was made from (a run generating from augment_checkpoint with
                          # another dataset records its output under "generated", not here)
                          "source": self.meta.get("source", {"path": self.source_path,
                                                             "content_fingerprint": self.fingerprint}),
                          "settings": self.meta.get("settings", self.s.training_identity())})
        self.meta.update(stage)
        os.makedirs(self.folder, exist_ok=True)
        write_json_atomic(os.path.join(self.folder, META), self.meta)

    def _check_checkpoint(self, folder):
        """augment_checkpoint's meta.json, checked against this run's source and variant (ConfigError naming the
        difference); the caller takes its model settings (adopt_trained)."""
        meta = self._read_meta(folder)
        if meta is None or meta.get("format") != META_FORMAT:
            raise ConfigError(f"augment_checkpoint={folder} is not a CODI artifact folder (no {META} of format "
                              f"{META_FORMAT}); give a results/augment/<augmenter>/<env>/<id> folder")
        env, env_args = self.dataset.attrs["env"], json.loads(self.dataset.attrs["env_args"])
        if meta["env"] != env or unseeded(meta["env_args"]) != unseeded(env_args):
            raise ConfigError(f"augment_checkpoint={folder} was trained on env {meta['env']} with env_args "
                              f"{meta['env_args']}, but {self.source_path} is env {env} with env_args {env_args}: "
                              f"use a dataset and --env-config of the checkpoint's env")
        if meta["env_info"] != self.env_info:
            raise ConfigError(f"augment_checkpoint={folder} was trained on shapes {meta['env_info']}, but "
                              f"{self.source_path} has {self.env_info}: use a dataset of the checkpoint's env")
        if meta["labels"] != self.labels:
            raise ConfigError(f"augment_checkpoint={folder} was trained as {meta['augmenter']} (labels: "
                              f"{meta['labels']}); {self.name} needs labels '{self.labels}': use the checkpoint's "
                              f"--config={meta['augmenter']} (codi and codi_no_comp share their models)")
        require_trained(folder, meta)
        return meta

    # ------------------------------------------------------------------ checks before any stage
    def check_stages(self, stages):
        """What the stages will need, checked before the first one starts (ConfigError naming the fix): the given
        labels (labeler), the conditions and the held-out split (train), the trained models and their step count
        (train, generate)."""
        if "labeler" in stages and self.labels == "distilled":
            self._given_labels()
        if "train" in stages:
            if self.labels == "privileged":
                self.privileged_labels()
            elif self.labels == "distilled" and "labeler" not in stages:
                self.own_label()
        if "train" in stages or "generate" in stages:
            self.split()
        longest = int(episode_lengths(self.arrays["filled"]).max()) if "train" in stages else None
        if longest is not None and longest < self.s.horizon - 1:
            self.warn(f"no episode of {self.source_path} has the {self.s.horizon - 1} transitions of a segment of "
                      f"segment_horizon={self.s.horizon} (the longest has {longest}): every segment is padded past "
                      f"its episode's end, so the models never see a whole one; choose segment_horizon <= "
                      f"{longest + 1} (labels judged at that H)")
        if "train" in stages:  # training goes on from the checkpoint: it must not be past this run's steps
            trained = self.trained_steps()
            if trained is not None and trained > self.s.train_steps:
                raise ConfigError(self._steps_message(trained))
        if "generate" in stages and "train" not in stages:
            if "train" not in self.meta:
                raise ConfigError(f"{self.folder} holds no trained models: run the train stage first "
                                  f"(augment_stage=train or all)")
            models = self.meta["train"]["steps"]  # generation reads models/, written when a training finished
            if not self.from_checkpoint and models != self.s.train_steps:
                raise ConfigError(self._steps_message(models))

    def trained_steps(self):
        """The step the folder's training reached (its checkpoint, else its finished models), or None."""
        ckpt = os.path.join(self.folder, "train", "checkpoint.pt")
        if os.path.exists(ckpt):
            return int(th.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["step"])
        return (self.meta.get("train") or {}).get("steps")

    def _steps_message(self, trained):
        asked = self.s.train_steps
        if trained > asked:
            return (f"the artifact folder {self.folder} holds models trained for {trained} steps, more than this "
                    f"run's augment_train_steps={asked} (the folder is keyed by every training setting but the step "
                    f"count, so that a longer run continues it): give augment_train_steps={trained} (or more, to "
                    f"train on) to use them, or train {asked} steps from scratch in another results folder "
                    f"(local_results_path=<another folder>); the folder is kept as it is")
        return (f"the artifact folder {self.folder} holds models trained for {trained} of this run's "
                f"augment_train_steps={asked} steps: run the train stage to finish them (augment_stage=train or all "
                f"continues the folder's training), or give augment_train_steps={trained} to generate from them as "
                f"they are")

    # ------------------------------------------------------------------ stage: labeler
    def _check_label_slot(self, name, sha):
        """labels/<name> of the source, when present, must be the labeler `sha`'s (attr labeler_sha256): labels of
        that name that something else wrote are refused, never replaced."""
        stored = episode_label_attrs(self.source_path, name)
        if stored and stored.get("labeler_sha256") != sha:
            made_by = (f"a labeling run (task {stored['task']}, {stored.get('created', '?')})" if "task" in stored
                       else f"CODI's labeler {stored['labeler_sha256'][:12]}" if "labeler_sha256" in stored
                       else f"another tool ({stored.get('created', 'no provenance')})")
            new = "<new name>"
            rename = edit_command(self.source_path, "--rename-label", f"{name}={new}")
            raise DatasetError(f"{self.source_path} has labels/{name} made by {made_by}, not by the labeler of "
                               f"{self.folder}, which writes its distilled labels under that name and never replaces "
                               f"labels it did not make. Keep them under another name: {rename} "
                               f"(and augment_label_name={new} if the labeler should fit on them), then rerun")

    def fit_labeler(self):
        if self.labels != "distilled":
            self.log(f"augmenter {self.name} uses no distilled labels: nothing to fit in the labeler stage")
            return None
        done = self.meta.get("labeler")
        kept = self.own_label(check=False)
        if done and kept:
            # fitted before in this folder and its labels are in the dataset: a refit could differ (cuDNN's GRU is
            # not deterministic) and would change the labels under a training checkpoint
            self.log(f"labeler: kept (labels/{kept} of {self.source_path} are this folder's labeler's)")
            return done
        given = self._given_labels()
        H, info = self.s.horizon, self.env_info
        path = os.path.join(self.folder, "labeler.pt")
        labeler = self._fitted_labeler(path, done)
        trained = [d for d in ("train", "models") if os.path.isdir(os.path.join(self.folder, d))]
        if done and labeler is None and trained:  # a refit would change the labels its models were trained on
            raise ConfigError(f"{path} is missing, damaged or not the labeler {self.folder} recorded "
                              f"({done['labeler_sha256'][:12]}), and its {' and '.join(trained)} were trained on "
                              f"that labeler's labels: restore labeler.pt, or train afresh in another folder "
                              f"(local_results_path=<another folder>)")
        if labeler is not None:  # fitted before, its labels not in the source (e.g. a fresh copy): label it again
            self.log(f"labeler: {path} (fitted before) labels the source again")
            summary = {**done, "label": self._store_z(label_all_starts(labeler, self.arrays, H), done)}
            self._write_meta(labeler=summary)
            return summary
        seg, y = labelled_segments(self.arrays, H, given)
        cfg = preset(self.s.preset, **self.s.labeler)
        labeler = AgentQualityLabeler(info["obs_shape"], info["n_actions"], cfg, device=self.device)
        self.log(f"labeler: fitting on {len(y)} segments labelled in labels/{self.s.label_name}")
        start = time.perf_counter()
        fit = labeler.fit(seg, y)
        _save_torch(labeler.state_dict(), path)
        z = label_all_starts(labeler, self.arrays, H)
        starts = all_starts(self.arrays["filled"])
        pred = z[starts[:, 0], starts[:, 1]]
        truth = self.dataset.one_expert_agent()[starts[:, 0]]
        # vs the given labels on the labeler's validation rows only: the others are its training data
        held_out = np.full_like(given, -1)
        val = np.asarray(fit.val_index, dtype=np.int64)
        held_out[seg.episode[val], seg.start[val]] = given[seg.episode[val], seg.start[val]]
        report = labeler_report(pred, given=held_out[starts[:, 0], starts[:, 1]], truth=truth,
                                n_agents=info["n_agents"])
        write_text_atomic(os.path.join(self.folder, "labeler_report.md"), report_markdown(report))
        best = fit.history[fit.best_epoch] if fit.history else {}
        summary = {"labeler_sha256": labeler.weights_hash(), "segments": int(len(y)), "steps": fit.steps,
                   "best_epoch": fit.best_epoch, "val_acc": best.get("val_acc"),
                   "seconds": time.perf_counter() - start, "report": report}
        summary["label"] = self._store_z(z, summary)
        for key, ref in (("labeler_acc_given", "vs_given"), ("labeler_acc_truth", "vs_truth")):
            if report[ref]["accuracy"] is not None:
                self.stat(key, report[ref]["accuracy"], 0)
        if summary["val_acc"] is not None:
            self.stat("labeler_val_acc", summary["val_acc"], 0)
        self.log("labeler: accuracy " + ", ".join(f"{k} {v['accuracy']}" for k, v in report.items())
                 + f"; labels/{summary['label']} in {self.source_path}")
        self._write_meta(labeler=summary)
        return summary

    def _fitted_labeler(self, path, done):
        """The labeler this folder fitted (labeler.pt, its hash the recorded one), or None."""
        if not done or not os.path.exists(path):
            return None
        try:
            labeler = AgentQualityLabeler.from_state_dict(th.load(path, map_location="cpu", weights_only=True),
                                                          device=self.device)
        except (RuntimeError, ValueError, KeyError):  # damaged (an OSError, e.g. a passing I/O error, propagates)
            return None
        return labeler if labeler.weights_hash() == done["labeler_sha256"] else None

    def _store_z(self, z, summary):
        """Write z as labels/codi_z_<labeler hash> into the source (unless the same labeler's are there); returns
        the name. Labels of that name by anything else are refused (_check_label_slot), never replaced."""
        sha = summary["labeler_sha256"]
        name = z_label(sha)
        self._check_label_slot(name, sha)
        if name in self.dataset.label_names:
            return name  # the same labeler's (another folder whose labeler came out equal)
        attrs = {"labeler_sha256": sha, "artifacts": self.folder, "augmenter": self.name,
                 "given_labels": self.s.label_name, "horizon": self.s.horizon,
                 "meaning": "z of the GRU labeler at every segment start (episode, t < L); zeros elsewhere"}
        write_episode_labels(self.source_path, {name: z}, attrs, self.fingerprint)
        self._set_dataset(OfflineDataset.load(self.source_path))
        return name

    # ------------------------------------------------------------------ stage: train
    # ------------------------------------------------------------------ stage: train
    def build_models(self, normaliser, returns_scale, reward_mean, reward_scale):
        info, m = self.env_info, self.s.model
        from augmenters.codi.diffusion import SegmentDiffusion  # diffusers: imported only when a model is built

        diffusion = SegmentDiffusion(info["n_agents"], info["obs_shape"], self.s.horizon, normaliser.generated,
                                     dim=m["dim"], dim_mults=tuple(m["dim_mults"]), n_timesteps=m["n_timesteps"],
                                     returns_scale=returns_scale, label_drop=m["label_drop"],
                                     p_uncond=m["p_uncond"], label_keep_one=m.get("label_keep_one", 0.0),
                                     lr=m["lr"], ema_decay=m["ema_decay"],
                                     device=self.device, seed=self.s.seed)
        with th.random.fork_rng(devices=[]):  # seeded weights whatever ran before in this process
            th.manual_seed(self.s.seed + 1)
            dynamics = DynamicsModels(info["n_agents"], info["obs_shape"], info["n_actions"],
                                      hidden=self.s.dynamics_hidden, generated=normaliser.generated,
                                      reward_mean=reward_mean, reward_scale=reward_scale, lr=self.s.dynamics_lr,
                                      device=self.device)
        return diffusion, dynamics

    def train(self, stop=None):
        """The train stage (module doc). `stop`: a function asked after every step whether to stop there (Ctrl-C,
        run/augment.py): the loop then saves a checkpoint at that step (unless it just did) and returns
        {"interrupted": True, "steps", "checkpoint"}; a rerun resumes from it exactly."""
        z_all = self.conditions()
        train_eps, _ = self.split()
        starts = self.starts_of(train_eps)
        rng = np.random.default_rng([self.s.seed, 3])
        ckpt_path = os.path.join(self.folder, "train", "checkpoint.pt")
        state = th.load(ckpt_path, map_location="cpu", weights_only=False) if os.path.exists(ckpt_path) else None
        if state is not None and "normaliser" in state:  # the checkpoint's data statistics, as they were
            normaliser = ObsNormaliser.from_state_dict(state["normaliser"])
        else:
            filled = np.asarray(self.arrays["filled"]).reshape(len(self.dataset), -1).astype(bool)
            normaliser = ObsNormaliser.fit(self.arrays["obs"][train_eps], filled[train_eps], per_agent=False)
        if state is not None:
            scale = state["diffusion"]["config"]["returns_scale"]
            r_mean, r_scale = (state["dynamics"]["config"][k] for k in ("reward_mean", "reward_scale"))
        else:
            from augmenters.codi.diffusion import returns_scale_from

            scale = returns_scale_from(returns_to_go(self.arrays)[starts[:, 0], starts[:, 1]])
            # f_rwd's standardisation, over the real transitions of the training episodes (not of all segments,
            # which would hold every transition up to H times in memory)
            lengths = episode_lengths(self.arrays["filled"])[train_eps]
            reward = np.asarray(self.arrays["reward"])[train_eps, :, 0]
            r_mean, r_scale = reward_stats(SimpleNamespace(
                reward=reward, step_valid=np.arange(reward.shape[1])[None, :] < lengths[:, None]))
        diffusion, dynamics = self.build_models(normaliser, scale, r_mean, r_scale)
        project = self.projection(normaliser)  # the probe samples as generation will
        step = 0
        if state is not None:
            diffusion.load_state_dict(state["diffusion"])
            dynamics.load_state_dict(state["dynamics"])
            rng.bit_generator.state = state["batch_rng"]
            step = int(state["step"])
            if step > self.s.train_steps:  # never silently: generation would use models trained longer than asked
                raise ConfigError(self._steps_message(step))
            self.log(f"train: resuming from {ckpt_path} at step {step} of {self.s.train_steps}")
        valid = self.valid_segments(normaliser)
        self._write_meta(normaliser=normaliser.state_dict())
        B, total, sums, count = self.s.batch_size, self.s.train_steps, {}, 0
        start_time, start_step = time.perf_counter(), step
        last_saved = step if state is not None else None
        saved_at = time.perf_counter()

        def save():
            _save_torch({"diffusion": diffusion.state_dict(), "dynamics": dynamics.state_dict(),
                         "batch_rng": rng.bit_generator.state, "step": step,
                         "normaliser": normaliser.state_dict()}, ckpt_path)
            return step, time.perf_counter()

        while step < total:
            rows = rng.integers(len(starts), size=B)
            seg = segments(self.arrays, self.s.horizon, starts[rows])
            z = None if z_all is None else z_all[seg.episode, seg.start]
            try:
                d_loss = diffusion.train_step({"x": normaliser.normalise(seg.obs), "R": seg.rtg,
                                               "obs_valid": seg.obs_valid, "z": z})
                dyn = dynamics.train_step(segment_batch(seg, normaliser, device=self.device,
                                                        avail_actions=segment_avail(self.arrays, seg)))
            except FloatingPointError as e:
                kept = (f"the last checkpoint {ckpt_path} (step {last_saved}) is kept" if last_saved is not None
                        else "no checkpoint was saved yet")
                raise FloatingPointError(f"training stopped at step {step}: {e}. {kept}; lower augment_lr / "
                                         f"dynamics_lr (a new run folder) or check the dataset for NaN values") from e
            step += 1
            for k, v in {"diffusion_loss": d_loss["loss"], "dyn_inv_loss": dyn["inv"], "dyn_fwd_loss": dyn["fwd"],
                         "dyn_rwd_loss": dyn["rwd"], "inv_acc": dyn["inv_acc"]}.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if step % self.s.log_interval == 0 or step == total:
                self._log_training(step, sums, count, diffusion, dynamics, valid, start_time, start_step, project)
                sums, count = {}, 0
            overdue = self.s.save_minutes and time.perf_counter() - saved_at >= 60 * self.s.save_minutes
            if step % self.s.save_interval == 0 or step == total or overdue:
                last_saved, saved_at = save()
            if stop is not None and step < total and stop():
                if last_saved != step:
                    last_saved, saved_at = save()
                self.log(f"train: stopped at step {step} of {total}; checkpoint {ckpt_path}")
                return {"interrupted": True, "steps": step, "checkpoint": ckpt_path}
        hashes = self._save_models(diffusion, dynamics, normaliser)
        summary = {"steps": step, "model_hashes": hashes, "returns_scale": scale,
                   "reward_mean": r_mean, "reward_scale": r_scale, "train_episodes": len(train_eps),
                   "segments": int(len(starts)), "diffusion_parameters": diffusion.n_parameters(),
                   "dynamics_parameters": dynamics.n_parameters(),
                   "inv_acc_valid": dynamics.action_accuracy(valid)}
        self._write_meta(train=summary)
        self.log(f"train: {step} steps done; models in {self.folder}/models")
        return summary

    def _log_training(self, step, sums, count, diffusion, dynamics, valid, start_time, start_step, project=None):
        for k, v in sums.items():
            self.stat(k, v / max(count, 1), step)
        acc = dynamics.action_accuracy(valid)
        delta = self.delta(dynamics, valid)
        rate = dynamics.pass_rate(valid["x"], delta, valid["step_valid"], valid.get("avail_actions"))
        self.stat("inv_acc_valid", acc, step)
        self.stat("delta", delta, step)
        self.stat("real_pass_rate", rate, step)
        probe_rate, probe_error = self.probe(diffusion, dynamics, valid, delta, project=project)
        if probe_rate is None:  # nothing to probe: no statistic (a NaN would be no valid JSON in info.json)
            probe = f"no generated (probe) pass rate (no held-out episode has {self.s.horizon} transitions)"
        else:
            self.stat("probe_pass_rate", probe_rate, step)
            self.stat("probe_step_error", probe_error, step)
            probe = f"generated (probe) pass rate {probe_rate:.3f} with median worst-step error {probe_error:.4g}"
        speed = (step - start_step) / max(time.perf_counter() - start_time, 1e-9)
        self.stat("train_steps_per_s", speed, step)
        self.log(f"train step {step}/{self.s.train_steps}: diffusion loss "
                 f"{sums.get('diffusion_loss', 0) / max(count, 1):.4g}, inverse accuracy (held out) {acc:.3f}, "
                 f"real pass rate {rate:.3f} at delta {delta:.4g}, {probe}, {speed:.1f} steps/s")

    def probe(self, diffusion, dynamics, valid, delta, size=64, project=None):
        """How generated segments fare now: up to `size` held-out real segments without padding are generated again
        from their o_0 and return-to-go with this variant's guidance and sampler (EMA weights, a fixed seed; no
        training state changes). Returns (the fraction whose worst step error is <= delta, the median worst error),
        (None, None) when no held-out segment is free of padding."""
        rows = th.nonzero(valid["step_valid"].all(1)).reshape(-1)[:size]
        if len(rows) == 0:
            return None, None
        g = self.s.generation
        x = diffusion.sample(valid["x"][rows, 0], valid["R"][rows], guidance=self.guidance,
                             guidance_weights=g["guidance_weights"], sampler=g["sampler"],
                             n_steps=g["sampling_steps"], generator=self.s.seed, project=project)
        worst = dynamics.segment_errors(x).cpu().numpy()
        return float((worst <= delta).mean()), float(np.median(worst))

    def _save_models(self, diffusion, dynamics, normaliser):
        models = os.path.join(self.folder, "models")
        _save_torch(diffusion.state_dict(), os.path.join(models, "diffusion.pt"))
        _save_torch(dynamics.state_dict(), os.path.join(models, "dynamics.pt"))
        write_json_atomic(os.path.join(models, "normaliser.json"), normaliser.state_dict())
        config = diffusion.scheduler_config()  # sorted: the same file whatever order diffusers keeps its keys in
        write_json_atomic(os.path.join(models, "scheduler_config.json"), {k: config[k] for k in sorted(config)})
        hashes = {"diffusion.pt": state_hash(diffusion.state_dict()), "dynamics.pt": state_hash(dynamics.state_dict()),
                  "normaliser.json": state_hash(normaliser.state_dict())}
        if self.labels == "distilled":
            hashes["labeler"] = self.meta["labeler"]["labeler_sha256"]
        return hashes

    # ------------------------------------------------------------------ stage: generate
    def load_models(self):
        meta = self._read_meta(self.folder) or {}
        if "train" not in meta:
            raise ConfigError(f"{self.folder} holds no trained models: run the train stage first (augment_stage=train "
                              f"or all)")
        models = os.path.join(self.folder, "models")
        states = {}
        for name in ("diffusion.pt", "dynamics.pt", "normaliser.json"):
            path = os.path.join(models, name)
            if not os.path.exists(path):
                raise ValueError(f"{path} is missing: train again (augment_stage=train) or restore the file")
            if name.endswith(".json"):
                with open(path, encoding="utf-8") as f:
                    states[name] = json.load(f)
            else:
                states[name] = th.load(path, map_location="cpu", weights_only=False)
            if state_hash(states[name]) != meta["train"]["model_hashes"][name]:
                raise ValueError(f"{path} differs from the hash recorded in {META}: train again (delete "
                                 f"{self.folder}) or restore the file")
        normaliser = ObsNormaliser.from_state_dict(states["normaliser.json"])
        d_state, dyn_state = states["diffusion.pt"], states["dynamics.pt"]
        t = meta["train"]
        diffusion, dynamics = self.build_models(normaliser, t["returns_scale"], t["reward_mean"], t["reward_scale"])
        # the training noise generator's state is kept out: it is device-specific (a CUDA-trained model generates on
        # the CPU too), and sampling draws from its own seeded generator
        diffusion.load_state_dict({**d_state, "rng": diffusion.rng.get_state()})
        dynamics.load_state_dict(dyn_state)
        bad = diffusion.nonfinite(ema=True)
        if bad:  # training now stops on these (SegmentDiffusion.train_step); models of earlier versions may hold them
            raise ConfigError(f"the models in {models} hold NaN or infinite EMA weights ({bad}), so they cannot "
                              f"generate (earlier versions accepted ema_decay >= 1, which diverges): train models "
                              f"again with other settings (ema_decay in (0, 1), a lower augment_lr; other settings "
                              f"train in another artifact folder)")
        return diffusion, dynamics, normaliser, meta

    def delta(self, dynamics, valid):
        g = self.s.generation
        if g["delta"] != "auto":
            return float(g["delta"])
        return dynamics.calibrate_delta(valid["x"], valid["step_valid"], quantile=g["delta_quantile"],
                                        per=g["delta_per"], avail=valid.get("avail_actions"))

    def output_path(self, model_hashes, source_fingerprint):
        if self.out:
            return os.path.abspath(self.out)
        key = json.dumps({"augmenter": self.name, "guidance": self.guidance, "generation": self.s.generation,
                          "models": model_hashes, "source": source_fingerprint}, sort_keys=True)
        return os.path.join(self.folder, f"generated_{hashlib.sha256(key.encode()).hexdigest()[:12]}.h5")

    def sampling(self):
        """What decides the samples beside the models and the generation settings (stored with the output;
        project_views only when on, so that outputs made before the option keep matching)."""
        g = self.s.generation
        return {"guidance": self.guidance, "guidance_weights": g["guidance_weights"], "sampler": g["sampler"],
                "sampling_steps": g["sampling_steps"], **({"project_views": True} if g.get("project_views") else {})}

    def projection(self, normaliser):
        """The shared-world projection of sampling (views.py) when project_views is on, else None."""
        if not self.s.generation.get("project_views"):
            return None
        M = checked_projection(self.hooks, self.arrays["obs"], "set project_views: False to sample without it")
        return ViewProjection(normaliser, M, device=self.device)

    def existing_output(self, out, identity):
        """The generation summary of `out` when it was made exactly as this run would make it; an error naming
        what differs otherwise (an `augment_out` path is not keyed by the settings, so it may hold another run's)."""
        if not _is_generated(out):  # never advise removing a dataset generation did not write (a source, say)
            raise ConfigError(f"augment_out={out} exists and is not a dataset that CODI generated: generation never "
                              f"writes over it; choose another augment_out")
        ds = OfflineDataset.load(out, lazy=True)
        try:
            attrs = ds.attrs
            have = {"augmenter": attrs.get("augmenter"), "source_fingerprint": attrs.get("source_fingerprint"),
                    "model_hashes": json.loads(attrs.get("model_hashes", "null")),
                    "sampling": json.loads(attrs.get("sampling", "null")),
                    "settings": json.loads(attrs.get("config", "{}")).get("generation")}
            summary = json.loads(attrs["generation"]) if "generation" in attrs else {}
        finally:
            ds.close()
        want = json.loads(to_json(identity))
        differ = sorted(k for k in want if have.get(k) != want[k])
        if differ:
            raise ConfigError(f"{out} exists but was generated differently (it differs in {differ}): choose another "
                              f"augment_out (or remove that generated file if it is no longer needed)")
        return summary

    def generate(self, config=None):
        from augmenters.codi.generation import GenerationSettings, generate_dataset

        diffusion, dynamics, normaliser, meta = self.load_models()
        g = self.s.generation
        valid = self.valid_segments(normaliser)
        delta = self.delta(dynamics, valid)
        real = dynamics.pass_rate(valid["x"], delta, valid["step_valid"], valid.get("avail_actions"))
        episodes = g["episodes"] or len(self.dataset)
        settings = GenerationSettings(n_episodes=episodes, horizon=self.s.horizon, target_rtg=g["target_rtg"],
                                      delta=delta, seed=g["seed"], part_size=g["part_size"],
                                      batch_size=g["batch_size"], max_resamples=g["max_resamples"],
                                      max_attempts=g["max_attempts"], max_view_gap=g.get("max_view_gap"),
                                      snap_obs=bool(g.get("snap_obs")),
                                      delta_quantile=g["delta_quantile"] if g["delta"] == "auto" else None)
        source_fingerprint = self.fingerprint  # labels written since do not change it
        out = self.output_path(meta["train"]["model_hashes"], source_fingerprint)
        if os.path.exists(out):
            identity = {"augmenter": self.name, "source_fingerprint": source_fingerprint,
                        "model_hashes": meta["train"]["model_hashes"], "sampling": self.sampling(),
                        "settings": settings.identity()}
            summary = self.existing_output(out, identity)
            self.log(f"generate: {out} exists (same source, models and settings): kept")
            return {"path": out, "reused": True, "delta": delta, "real_pass_rate": real,
                    "max_view_gap": settings.max_view_gap, "snap_obs": settings.snap_obs, **summary}
        self.log(f"generate: {episodes} episodes with guidance {self.guidance} (weights {g['guidance_weights']}), "
                 f"delta {delta:.4g} (real pass rate {real:.3f}) -> {out}")
        sampler = GuidedSampler(diffusion, self.guidance, g["guidance_weights"], g["sampler"], g["sampling_steps"],
                                project=self.projection(normaliser))
        start = time.perf_counter()
        result = generate_dataset(out, self.source_path, sampler, dynamics, normaliser, self.hooks, settings,
                                  self.name, model_hashes=meta["train"]["model_hashes"],
                                  config={**dict(config or {}), "augment_artifacts": self.folder,
                                          "guidance": self.guidance, "delta": delta},
                                  device=str(self.device), sampling=self.sampling(),
                                  log=SimpleNamespace(info=self.log, warning=self.warn))  # in the run's log
        result.update(reused=False, delta=delta, real_pass_rate=real, max_view_gap=settings.max_view_gap,
                      snap_obs=settings.snap_obs, seconds=time.perf_counter() - start)
        for key in ("pass_rate", "return_mean", "return_minus_target_mean"):
            self.stat(f"gen_{key}", result[key], 0)
        self.stat("gen_real_pass_rate", real, 0)
        self.stat("gen_delta", delta, 0)
        generated = [r for r in self.meta.get("generated", []) if r.get("path") != out]
        self._write_meta(generated=generated + [{k: v for k, v in result.items()}])
        return result


class CodiNoComp(CodiAugmenter):
    name, labels, guidance = "codi_no_comp", "distilled", "all_ones"


class CodiPrivileged(CodiAugmenter):
    name, labels, guidance = "codi_privileged", "privileged", "compose"
    writes_labels = ()


class MadiffLike(CodiAugmenter):
    name, labels, guidance = "madiff_like", "none", "return_only"
    writes_labels = ()


VARIANTS = {cls.name: cls for cls in (CodiAugmenter, CodiNoComp, CodiPrivileged, MadiffLike)}
