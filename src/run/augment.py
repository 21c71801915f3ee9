"""Run mode `augment` (`--config=codi | codi_no_comp | codi_privileged | madiff_like`): enlarge an offline dataset
with generated episodes (CODI, issue 15; the pipeline: augmenters/codi/augmenter.py).

    python src/main.py --config=label_agent_quality --env-config=mpe_spread with offline_dataset=data.h5   # step 1
    python src/main.py --config=codi --env-config=mpe_spread with offline_dataset=data.h5
    python src/main.py --config=codi ... with offline_dataset=data.h5 augment_stage=generate target_rtg=-105
    python src/main.py --config=codi_no_comp ... with offline_dataset=data.h5 augment_checkpoint=results/augment/...

Stages (`augment_stage`): labeler, train, generate, or all in order. A rerun of the same command continues its
artifact folder (the training checkpoint, the generation's finished parts). Losses, accuracies and pass rates go to
Sacred (info.json, metrics.json) and TensorBoard; the run's info holds each stage's summary.
"""
import contextlib
import os

from augmenters import REGISTRY
from augmenters.codi.settings import resolve
from augmenters.codi.stitching import check_hooks
from augmenters.codi.views import checked_projection
from envs import env_from_args
from offline.reader import OfflineDataset
from run.label import dataset_path, pick
from run.setup import simple_run
from utils.files import FolderLock, clean_stale_temps
from utils.paths import env_label, results_path, unseeded


def run_augment(_run, config, _log):
    with simple_run(config, _log, _run) as (args, logger):
        return _augment(args, config, logger, _log, _run)


def _augment(args, config, logger, _log, _run):
    augmenter_class = pick(REGISTRY, args.augmenter, "augmenter")
    settings = resolve(args)
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
        check_hooks(env, episodes[:, 0], dataset.env_info, view_gap=settings.generation.get("max_view_gap") is not None,
                    snap=bool(settings.generation.get("snap_obs")))
        # per-agent guidance weights must fit this dataset's agents: refused now, not after hours of training
        from augmenters.codi.diffusion import guidance_weight_vector  # diffusers: imported only where it is used

        guidance_weight_vector(augmenter_class.guidance, settings.generation["guidance_weights"],
                               dataset.env_info["n_agents"])
        if settings.generation.get("project_views"):
            checked_projection(env, episodes, "set project_views: False to sample without it")
        augmenter = augmenter_class(settings, path, dataset, args.env_config, results_dir, env_label(config), env,
                                    device=args.device, log=_log.info, stat=logger.log_stat,
                                    checkpoint=args.augment_checkpoint, out=args.augment_out)
        lock = FolderLock.try_acquire(augmenter.folder)
        if lock is None:
            raise RuntimeError(f"another process is running in {augmenter.folder} (the same augmenter, dataset and "
                               f"settings): wait for it to finish, then rerun to continue from its checkpoint")
        stack.callback(lock.release)
        if args.use_tensorboard:
            logger.setup_tb(os.path.join(results_dir, "tb_logs", f"augment_{augmenter.name}_"
                                         f"{os.path.basename(augmenter.folder)}"))
        clean_stale_temps(augmenter.folder, depth=2)
        stages = ["labeler", "train", "generate"] if args.augment_stage == "all" else [args.augment_stage]
        if args.augment_checkpoint and args.augment_stage == "all":
            stages = ["generate"]  # a trained folder: generate again from its models
        _log.info(f"Augmenter {augmenter.name} on {path} ({len(dataset)} episodes), stages {stages}, artifacts "
                  f"{augmenter.folder}")
        info = {"augmenter": augmenter.name, "dataset": path, "artifacts": augmenter.folder, "stages": stages}
        if _run is not None:
            _run.info["augment"] = info
        if "labeler" in stages:
            info["labeler"] = augmenter.fit_labeler()
        if "train" in stages:
            info["train"] = augmenter.train()
        if "generate" in stages:
            info["generate"] = augmenter.generate(config={"augmenter": augmenter.name,
                                                          "augment_preset": settings.preset})
            _log.info(f"Generated dataset: {info['generate']['path']} (pass rate "
                      f"{info['generate']['pass_rate']:.2%}, mean return {info['generate']['return_mean']:.4g})")
        return info
