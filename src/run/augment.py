"""Run mode `augment` (`--config=codi | codi_no_comp | codi_privileged | madiff_like`): enlarge an offline dataset
with generated episodes (CODI, issue 15; the pipeline: augmenters/codi/augmenter.py).

    python src/main.py --config=label_agent_quality --env-config=mpe_spread with offline_dataset=data.h5   # step 1
    python src/main.py --config=codi --env-config=mpe_spread with offline_dataset=data.h5
    python src/main.py --config=codi ... with offline_dataset=data.h5 augment_stage=generate target_rtg=-105
    python src/main.py --config=codi_no_comp ... with offline_dataset=data.h5 augment_checkpoint=results/augment/...

Stages (`augment_stage`): labeler, train, generate, or all in order. A rerun of the same command continues its
artifact folder (the training checkpoint, the generation's finished parts). Losses, accuracies and pass rates go to
Sacred (info.json, metrics.json) and TensorBoard; the run's info holds each stage's summary.

Before any stage: the settings (run/preflight.py, before the run starts), the env hooks, the guidance weights against
the dataset's agents, and what the stages will read (CodiAugmenter.check_stages: given labels, conditions, the
held-out split, the trained models and their step count) are checked, so a mistake stops the run in one line (exit
status 2) before hours of training. Ctrl-C during training stops at the next step with a checkpoint there
(run/interrupt.py's CtrlC); the rerun of the same command resumes from it. A failed run leaves no empty artifact
folder behind.
"""
import contextlib
import os

import numpy as np

from augmenters import REGISTRY
from augmenters.codi.settings import resolve
from augmenters.codi.stitching import check_hooks, resolve_target_rtg
from augmenters.codi.views import checked_projection
from envs import env_from_args
from offline.reader import OfflineDataset
from run.interrupt import CtrlC
from run.label import dataset_path, pick
from run.setup import simple_run
from utils.config import ConfigError
from utils.files import FolderLock, clean_stale_temps, remove_empty_dirs
from utils.paths import env_label, results_path, unseeded


def run_augment(_run, config, _log):
    with simple_run(config, _log, _run) as (args, logger):
        return _augment(args, config, logger, _log, _run)


def _checked(check, *a, **kw):
    """`check(*a, **kw)` with its ValueError as a ConfigError (one line, exit status 2: a setting to change)."""
    try:
        return check(*a, **kw)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _warn_target(settings, dataset, _log):
    """target_rtg outside the source's returns: the model was conditioned only on returns-to-go the data has."""
    returns = np.asarray(dataset.returns, dtype=np.float64)
    target = resolve_target_rtg(settings.generation["target_rtg"], returns)
    lo, hi = float(returns.min()), float(returns.max())
    if not lo <= target <= hi:
        _log.warning(f"target_rtg={settings.generation['target_rtg']} is {target:.4g}, outside the source's episode "
                     f"returns [{lo:.4g}, {hi:.4g}]: the diffusion model learnt returns-to-go the data has and "
                     f"extrapolates beyond them, so generated returns may land far from it; choose one inside (e.g. "
                     f"target_rtg=quantile:0.9)")


def _warn_checkpoint(augmenter, args, _log):
    """augment_checkpoint: the settings taken from its meta.json that this run gives otherwise (a preset key left
    null is not given), and a source other than the models'."""
    given = [(k, ours, theirs) for k, ours, theirs in augmenter.adopted if getattr(args, k) is not None]
    if given:
        _log.warning(f"augment_checkpoint={augmenter.folder}: generating with its models' settings, "
                     + ", ".join(f"{k}={theirs!r} (this run's {ours!r} is not used)" for k, ours, theirs in given))
    if augmenter.other_source:
        _log.warning(f"augment_checkpoint={augmenter.folder} was trained on {augmenter.other_source}, not on "
                     f"{augmenter.source_path} (other episodes of the same env): generation starts from this source's "
                     f"first observations and calibrates delta on its held-out episodes, with models that never saw "
                     f"them")


def _augment(args, config, logger, _log, _run):
    augmenter_class = pick(REGISTRY, args.augmenter, "augmenter")
    settings = _checked(resolve, args)
    path = dataset_path(args.offline_dataset)
    results_dir = results_path(config)
    env_args = unseeded(args.env_args)
    dataset = OfflineDataset.load(path, expect_env=(args.env, env_args))
    env = env_from_args(args)
    with contextlib.ExitStack() as stack:
        stack.callback(env.close)
        # an env without the obs hooks (or without view_gap_from_obs when max_view_gap is on, view_projection when
        # project_views is, snap_obs when snap_obs is) is refused before any training
        episodes = dataset.arrays(rows=[0, min(1, len(dataset) - 1)])["obs"]
        _checked(check_hooks, env, episodes[:, 0], dataset.env_info,
                 view_gap=settings.generation.get("max_view_gap") is not None,
                 snap=bool(settings.generation.get("snap_obs")))
        # per-agent guidance weights must fit this dataset's agents: refused now, not after hours of training
        from augmenters.codi.diffusion import guidance_weight_vector  # diffusers: imported only where it is used

        _checked(guidance_weight_vector, augmenter_class.guidance, settings.generation["guidance_weights"],
                 dataset.env_info["n_agents"])
        if settings.generation.get("project_views"):
            _checked(checked_projection, env, episodes, "set project_views: False to sample without it")
        augmenter = augmenter_class(settings, path, dataset, args.env_config, results_dir, env_label(config), env,
                                    device=args.device, log=_log.info, stat=logger.log_stat,
                                    checkpoint=args.augment_checkpoint, out=args.augment_out, warn=_log.warning)
        stages = ["labeler", "train", "generate"] if args.augment_stage == "all" else [args.augment_stage]
        if args.augment_checkpoint and args.augment_stage == "all":
            stages = ["generate"]  # a trained folder: generate again from its models
        _warn_checkpoint(augmenter, args, _log)
        if "generate" in stages:
            _warn_target(augmenter.s, dataset, _log)
        augmenter.check_stages(stages)  # what the stages read, before the first starts (and before any folder)
        created = not os.path.isdir(augmenter.folder)
        lock = FolderLock.try_acquire(augmenter.folder)
        if lock is None:  # (and nothing of the running one's is touched: no cleanup was registered)
            raise RuntimeError(f"another process is running in {augmenter.folder} (the same augmenter, dataset and "
                               f"settings): wait for it to finish, then rerun to continue from its checkpoint")
        stack.callback(lock.release)
        if created:  # a failed run leaves no empty artifact folder: removed while the lock is still held
            stack.callback(remove_empty_dirs, augmenter.folder, results_dir)
        if args.use_tensorboard:
            logger.setup_tb(os.path.join(results_dir, "tb_logs", f"augment_{augmenter.name}_"
                                         f"{os.path.basename(augmenter.folder)}"))
        clean_stale_temps(augmenter.folder, depth=2)
        _log.info(f"Augmenter {augmenter.name} on {path} ({len(dataset)} episodes), stages {stages}, artifacts "
                  f"{augmenter.folder}")
        info = {"augmenter": augmenter.name, "dataset": path, "artifacts": augmenter.folder, "stages": stages}
        if augmenter.from_checkpoint:
            info["models"] = {"steps": augmenter.meta["train"]["steps"], "settings": augmenter.meta["settings"],
                              "source": augmenter.meta.get("source")}
        if _run is not None:
            _run.info["augment"] = info
        if "labeler" in stages:
            info["labeler"] = augmenter.fit_labeler()
        if "train" in stages:
            info["train"] = _train(augmenter, _log, last=stages[-1] == "train")
        if "generate" in stages:
            info["generate"] = augmenter.generate(config={"augmenter": augmenter.name,
                                                          "augment_preset": settings.preset})
            _log.info(f"Generated dataset: {info['generate']['path']} (pass rate "
                      f"{info['generate']['pass_rate']:.2%}, mean return {info['generate']['return_mean']:.4g})")
        return info


def _train(augmenter, _log, last):
    """The train stage under CtrlC: the first Ctrl-C (or SIGTERM) stops after the step under way with a checkpoint
    there, says where the rerun resumes and ends the run INTERRUPTED (exit status 130; 143); a second one stops at
    once. A Ctrl-C that lands once training is done (its last step, the final save) stops before generation, or,
    when training is the last stage, came too late to matter."""
    ctrl_c = CtrlC(_log, "the training step under way", saves=True)
    try:
        with ctrl_c:
            summary = augmenter.train(stop=lambda: ctrl_c.requested)
    except KeyboardInterrupt:
        step = augmenter.trained_steps()
        _log.warning(f"Stopped at once ({ctrl_c.why_at_once()}): the steps since the last checkpoint are lost; "
                     + (f"rerun the same command to resume from step {step} ({augmenter.folder}/train/checkpoint.pt)"
                        if step else "no checkpoint was saved, so a rerun trains from the start"))
        raise
    if summary.get("interrupted"):
        _log.warning(f"Interrupted at training step {summary['steps']} of {augmenter.s.train_steps}: checkpoint "
                     f"{summary['checkpoint']}; rerun the same command to resume from step {summary['steps']}")
        raise ctrl_c.interrupt()
    if ctrl_c.requested:
        if last:
            _log.warning(f"{ctrl_c.by} came too late to matter: training had finished ({summary['steps']} steps)")
        else:
            _log.warning(f"{ctrl_c.by}: training finished ({summary['steps']} steps, models in "
                         f"{augmenter.folder}/models); stopping before generation: rerun the same command to generate "
                         f"from them")
            raise ctrl_c.interrupt()
    return summary
