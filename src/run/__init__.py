"""Run modes by name (`run` in the config)."""
from run.evaluate import run_evaluate
from run.online import run_online


def run_tfcaf(_run, config, _log):
    # imported on use: the LLM layer and the sandbox are only needed to generate TFCAFs
    from run.tfcaf import run_tfcaf as run
    return run(_run, config, _log)


def run_collect(_run, config, _log):
    from run.collect import run_collect as run
    return run(_run, config, _log)


def run_offline(_run, config, _log):
    from run.offline import run_offline as run
    return run(_run, config, _log)


def run_label(_run, config, _log):
    from run.label import run_label as run
    return run(_run, config, _log)


def run_augment(_run, config, _log):
    from run.augment import run_augment as run
    return run(_run, config, _log)


def run_shape(_run, config, _log):
    from run.shape import run_shape as run
    return run(_run, config, _log)


REGISTRY = {
    "online": run_online,
    "evaluate": run_evaluate,
    "qllm_generate": run_tfcaf,  # --config=qllm_generate: generate a TFCAF
    "tfcaf": run_tfcaf,  # the earlier name of the same run mode
    "collect": run_collect,
    "offline": run_offline,
    "label": run_label,  # --config=label_preferences: label a dataset's items (labeling/)
    "augment": run_augment,  # --config=codi (codi_no_comp, codi_privileged, madiff_like): generate episodes
    "shape": run_shape,  # --config=lca_potential: train LCA potentials from a rankings file (shapers/lca/)
}
