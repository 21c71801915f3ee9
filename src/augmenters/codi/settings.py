"""The settings of a CODI augment run (`run: augment`), resolved from the config: presets `cpu` and `paper`, and the
explicit keys that override them (a key left null takes the preset's value).

    s = resolve(args)          # args: the run's config namespace (config/runs/codi.yaml and its variants)
    s.model["dim"], s.train_steps, s.generation["delta"], ...

`paper` is MADiff's MPE setting (CODI trains its diffusion "as MADiTS", whose settings are unpublished): dim 128, mults
1-4-8, K = 200, DDIM 15, batch 32 x 2, lr 2e-4, EMA 0.995, guidance 1.2, 1e6 steps. `cpu` is sized for 2 CPU cores: dim
64, mults 1-2 (1.4 M parameters), 10k steps, K = 50, DDIM 25 (DDIM 10 under-disperses the samples by about 15% on the
exact-ε Gaussian test of tests/augmenters/test_codi_diffusion.py; 25 divides K, so trailing spacing is exact), batch 64,
lr 1e-3 (not the paper's 2e-4: a short budget needs the faster rate).
Why dim 64 (2026-12-05; it was 32 with 20k steps, the CODI spread N = 3 and LBF tables of docs/studies were made so): at
dim 32 the model does not fit spread N = 4. madiff_like and codi both plateaued at an ε-loss of 0.12 over 20k steps (N =
3 reached 0.012), the training probe's median worst-step dynamics error grew to 0.99, and generation stopped with no
segment passing δ = 0.01 (90% of the rejected segments' errors above 0.73). lr 2e-4 and another seed did not help (4000
/ 3000 steps: 0.32 / 0.24). At dim 64 the same N = 4 data reach 0.037 after 1000 steps and 0.020 after 2500, with a
probe error of 0.0015 (passing δ = 0.01): a capacity limit, not an optimisation one. A dim-64 step costs about twice a
dim-32 one, so 10k steps take the time 20k did.
Why lr 1e-3: madiff_like on 300 one-expert spread N=3 episodes of 25 steps (H = 8, seed 3), 3,000 steps: ε-loss 0.098
with lr 1e-3 vs 0.239 with 2e-4 (0.175 after 8,000 steps of codi at 2e-4). Segments generated again from held-out o_0
(DDIM 25, w = 1.2) by the raw network after 3,000 steps at 1e-3 have a median worst-step dynamics error of 0.050 (the
training log's probe); at 2e-4 the models' errors stayed at 0.16-0.34 through 8,000 steps. Early in training the EMA
weights lag far behind (0.33 vs the raw network's 0.050 at step 3,000 with lr 1e-3: EMA 0.995 every 10 steps after step
2,000 averages over ~2,000 steps of a fast-moving network), so short runs (tests, smoke runs) generate from an EMA that
is worse than the network; at 20k steps the lag is a tenth of the run.
Measured on this machine's 2 shared cores, 1 torch thread, spread N=3 (O = 18, H = 8), batch 64, at dim 32: a diffusion
step 127 ms + a dynamics step 26 ms = 6.6 training steps/s alone (3.1 steps/s while other jobs ran; ~10.7 with two
augment runs side by side in the study); at dim 64 ~5 steps/s (spread N = 4, another run on the other core), so the cpu
preset's 10k steps take ~35 min; one guided sampler call (compose, 4 branches, 64 segments, dim 32) takes 1.7 s with
DDIM 10 and 4.1 s with DDIM 25 (about 16 segments/s): DDIM 25 is chosen for fidelity at 2.4x the generation time.
"""
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

PRESETS = {
    "cpu": {"dim": 64, "dim_mults": [1, 2], "n_timesteps": 50, "sampler": "ddim", "sampling_steps": 25,
            "batch_size": 64, "lr": 1e-3, "ema_decay": 0.995, "guidance_weights": 1.2, "train_steps": 10_000,
            "dynamics_hidden": 128, "dynamics_lr": 1e-3},
    "paper": {"dim": 128, "dim_mults": [1, 4, 8], "n_timesteps": 200, "sampler": "ddim", "sampling_steps": 15,
              "batch_size": 64, "lr": 2e-4, "ema_decay": 0.995, "guidance_weights": 1.2, "train_steps": 1_000_000,
              "dynamics_hidden": 256, "dynamics_lr": 1e-3},
}
# config key -> preset entry (null in the config = the preset's value)
PRESET_KEYS = {"diffusion_dim": "dim", "diffusion_dim_mults": "dim_mults", "diffusion_timesteps": "n_timesteps",
               "sampler": "sampler", "sampling_steps": "sampling_steps", "augment_batch_size": "batch_size",
               "augment_lr": "lr", "ema_decay": "ema_decay", "guidance_weights": "guidance_weights",
               "augment_train_steps": "train_steps", "dynamics_hidden": "dynamics_hidden",
               "dynamics_lr": "dynamics_lr"}
LABELER_KEYS = {"labeler_hidden": "hidden", "labeler_max_epochs": "max_epochs", "labeler_max_steps": "max_steps",
                "labeler_lr": "lr", "labeler_batch_size": "batch_size"}
STAGES = ("all", "labeler", "train", "generate")


@dataclass
class AugmentSettings:
    preset: str
    horizon: int
    seed: int
    model: dict  # SegmentDiffusion keyword arguments (dim, dim_mults, n_timesteps, lr, ema_decay, label_drop, p_uncond)
    batch_size: int
    train_steps: int
    dynamics_hidden: int
    dynamics_lr: float
    labeler: dict  # LabelerConfig overrides (labeler.preset(preset, **labeler))
    valid_fraction: float  # held-out episodes: dynamics accuracy, real pass rate, delta: auto
    log_interval: int
    save_interval: int
    save_minutes: float  # also a checkpoint once this much wall time passed since the last (0 = off)
    label_name: str  # the given labels the labeler is fitted on (labels/<name>)
    generation: dict = field(default_factory=dict)  # sampler, steps, weights, target, delta, episodes, ...

    def training_identity(self):
        """What decides the trained models (not train_steps: a longer run continues the same folder)."""
        d = asdict(self)
        for k in ("train_steps", "log_interval", "save_interval", "save_minutes", "generation"):
            d.pop(k)
        return d

    def generation_hash(self):
        return hashlib.sha256(json.dumps(self.generation, sort_keys=True).encode()).hexdigest()[:12]


def _int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _num(name, value, positive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and not value > 0):
        raise ValueError(f"{name} must be a number{' > 0' if positive else ''}, got {value!r}")
    return float(value)


def _flag(name, value):
    """A YAML switch: exactly True or False (1/0 or "yes" are refused, as elsewhere in the configs)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def resolve_delta(value):
    """'auto' (or null) or a finite number > 0 (no generated segment's error is exactly 0: delta=0 passes nothing)."""
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"delta must be auto (a quantile of the dynamics error on held-out real transitions, "
                         f"delta_quantile) or a finite number > 0 (0 passes no generated segment), got {value!r}")
    return float(value)


def _weight(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"guidance_weights must be a finite number >= 0 or a list of them (one per agent; a "
                         f"negative weight pushes away from the condition), got {value!r}")
    return float(value)


def resolve_weights(value):
    """A scalar w (w_i = w for every agent), or a list: one weight per agent, or one entry, which counts as the
    scalar (broadcast to every agent); each finite and >= 0. The length is checked against the dataset's agents
    before training (run/augment.py)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("guidance_weights is an empty list: give a scalar or one weight per agent")
        return [_weight(v) for v in value]
    return _weight(value)


def resolve(args):
    """AugmentSettings from the run's args (see config/runs/codi.yaml for every key)."""
    if args.augment_preset not in PRESETS:
        raise ValueError(f"augment_preset must be one of {sorted(PRESETS)}, got {args.augment_preset!r}")
    if args.augment_stage not in STAGES:
        raise ValueError(f"augment_stage must be one of {', '.join(STAGES)}, got {args.augment_stage!r}")
    if args.augment_checkpoint and args.augment_stage in ("labeler", "train"):
        # another run's artifact folder: fitting or training there would change the models under that run
        raise ValueError(f"augment_checkpoint={args.augment_checkpoint} generates from trained models; "
                         f"augment_stage={args.augment_stage} would fit or train inside that folder: leave "
                         f"augment_checkpoint out to {'fit' if args.augment_stage == 'labeler' else 'train'} in "
                         f"this run's own folder (a rerun of the command that made it continues its training), or "
                         f"use augment_stage=generate")
    p = dict(PRESETS[args.augment_preset])
    for key, entry in PRESET_KEYS.items():
        if getattr(args, key) is not None:
            p[entry] = getattr(args, key)
    if p["sampler"] not in ("ddim", "ddpm"):
        raise ValueError(f"sampler must be ddim or ddpm, got {p['sampler']!r}")
    mults = p["dim_mults"]
    if not isinstance(mults, (list, tuple)) or not mults or not all(_int("diffusion_dim_mults", m) for m in mults):
        raise ValueError(f"diffusion_dim_mults must be a list of integers >= 1, got {mults!r}")
    K = _int("diffusion_timesteps", p["n_timesteps"], 2)
    if p["sampler"] == "ddpm" and args.sampling_steps is None:
        p["sampling_steps"] = K  # ancestral sampling over every training step unless asked for fewer
    steps = _int("sampling_steps", p["sampling_steps"])
    if steps > K:
        raise ValueError(f"sampling_steps={steps} is more than diffusion_timesteps={K}: choose at most {K}")
    labeler = {}
    for key, entry in LABELER_KEYS.items():
        if getattr(args, key) is not None:
            labeler[entry] = getattr(args, key)
    seed = int(args.seed) if args.seed is not None else 0
    labeler["seed"] = seed
    target = args.target_rtg
    if target is None or isinstance(target, bool) or not isinstance(target, (int, float, str)):
        raise ValueError(f"target_rtg must be a number (env units) or quantile:q of the source returns, got "
                         f"{target!r}")
    from augmenters.codi.stitching import resolve_target_rtg

    resolve_target_rtg(target, [0.0])  # the form (a number, or quantile:q with q in [0, 1]), before any training
    episodes = args.augment_episodes
    if episodes is not None:
        episodes = _int("augment_episodes", episodes)
    generation = {"sampler": p["sampler"], "sampling_steps": steps,
                  "guidance_weights": resolve_weights(p["guidance_weights"]),
                  "target_rtg": target if isinstance(target, str) else float(target),
                  "delta": resolve_delta(args.delta), "delta_quantile": _num("delta_quantile", args.delta_quantile),
                  "delta_per": args.delta_per, "max_resamples": _int("max_resamples", args.max_resamples, 0),
                  "max_attempts": _int("max_attempts", args.max_attempts), "episodes": episodes,
                  "batch_size": _int("generation_batch_size", args.generation_batch_size),
                  "part_size": _int("generation_part_size", args.generation_part_size), "seed": seed}
    if args.max_view_gap is not None:  # only when on: the output paths of runs made without it keep their hash
        generation["max_view_gap"] = _num("max_view_gap", args.max_view_gap, positive=False)
        if not (generation["max_view_gap"] >= 0 and math.isfinite(generation["max_view_gap"])):
            raise ValueError(f"max_view_gap must be null (off) or a finite number >= 0, got {args.max_view_gap!r}")
    if _flag("project_views", args.project_views):  # only when on, as max_view_gap
        generation["project_views"] = True
    if _flag("snap_obs", args.snap_obs):  # only when on, as max_view_gap
        generation["snap_obs"] = True
    if not generation["delta_quantile"] <= 1:
        raise ValueError(f"delta_quantile must be in (0, 1], got {args.delta_quantile!r}")
    if args.delta_per not in ("step", "segment"):
        raise ValueError(f"delta_per must be step or segment, got {args.delta_per!r}")
    valid = _num("augment_valid_fraction", args.augment_valid_fraction)
    if not valid < 1:
        raise ValueError(f"augment_valid_fraction must be in (0, 1), got {valid!r}")
    ema = _num("ema_decay", p["ema_decay"])
    if not ema < 1:
        raise ValueError(f"ema_decay must be in (0, 1) (the EMA weight kept per update; >= 1 makes the sampling "
                         f"weights diverge), got {p['ema_decay']!r}")
    for key in ("label_drop", "p_uncond"):
        value = getattr(args, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{key} must be a probability in [0, 1], got {value!r}")
    model = {"dim": _int("diffusion_dim", p["dim"]), "dim_mults": [int(m) for m in mults], "n_timesteps": K,
             "lr": _num("augment_lr", p["lr"]), "ema_decay": ema,
             "label_drop": float(args.label_drop), "p_uncond": float(args.p_uncond),
             # only when on: the artifact folders and checkpoints of runs made before the option keep their ids
             # madiff_like has no labels to keep: there it changes nothing, so it stays out of its artifact id
             **({"label_keep_one": _num("label_keep_one", args.label_keep_one)}
                if args.label_keep_one and args.augmenter != "madiff_like" else {})}
    if not model.get("label_keep_one", 0.0) <= 1:
        raise ValueError(f"label_keep_one is a probability in [0, 1], got {args.label_keep_one!r}")
    return AugmentSettings(
        preset=args.augment_preset, horizon=_int("segment_horizon", args.segment_horizon, 2), seed=seed,
        model=model, batch_size=_int("augment_batch_size", p["batch_size"]),
        train_steps=_int("augment_train_steps", p["train_steps"], 0),
        dynamics_hidden=_int("dynamics_hidden", p["dynamics_hidden"]),
        dynamics_lr=_num("dynamics_lr", p["dynamics_lr"]), labeler=labeler, valid_fraction=valid,
        log_interval=_int("augment_log_interval", args.augment_log_interval),
        save_interval=_int("augment_save_interval", args.augment_save_interval),
        save_minutes=float(args.augment_save_minutes),  # range checked with the config (RANGES)
        label_name=args.augment_label_name, generation=generation)
