"""Run mode `collect` (`--config=collect`): datasets of per-agent policy mixtures from the checkpoints of one online
run (`behaviour_checkpoint`). The work is offline/collection.py's; this sets up the run around it."""
from offline.collection import collect
from run.setup import make_args
from utils.logging import Logger


def run_collect(_run, config, _log):
    args = make_args(config, _log)
    logger = Logger(_log)
    logger.setup_sacred(_run)
    # a seed the user gave (a `with` update) seeds the scoring episodes; a drawn one does not (offline/collection.py)
    updates = (getattr(_run, "meta_info", None) or {}).get("config_updates")
    seed_given = updates is None or "seed" in updates
    out_dir, table = collect(args, config, logger, _log, _run.info, seed_given=seed_given)
    _log.info(f"Datasets in {out_dir}:\n{table}")
    logger.finish()
