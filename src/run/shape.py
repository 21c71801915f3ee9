"""Run mode `shape` (`--config=lca_potential`): train LCA potentials from a rankings file (shapers/lca/train.py).

    python src/main.py --config=lca_potential --env-config=two_switch \\
        with lca.rankings=results/rankings/two_switch/<id>/rankings.h5

The potentials go to results/potentials/<env>/<id>/ (id: the rankings' SHA-256 and the lca.* training settings), and
a rerun of the same command reuses them. The run's info (info.json: lca_potential) holds the folder, whether it was
reused, the per-group metrics (validation loss, agreement with the votes and with the oracle) and the
potential's SHA-256; RL runs use the folder as lca.potential=... with shaper=lca.
"""
import time

from run.setup import simple_run
from shapers.lca.train import TrainSettings, check_episodes, summary, train_or_reuse
from utils.config import ConfigError
from utils.paths import repo_relative, results_path
from utils.progress import Bar


def run_shape(_run, config, _log):
    with simple_run(config, _log, _run) as (args, _):
        path = args.lca["rankings"]
        if not path:
            raise ConfigError("run=shape needs a rankings file: lca.rankings=results/rankings/<env>/<id>/rankings.h5 "
                             "(rank state pairs with --config=lca_label)")
        path = repo_relative(path)
        settings = TrainSettings.from_args(args)
        settings.check()
        start = time.perf_counter()
        folder, meta, reused = train_or_reuse(path, settings, results_path(config),
                                              expect_env=(args.env, args.env_args), device=args.device,
                                              progress=lambda total: Bar(total, desc="lca potentials", unit="epoch"),
                                              log=_log.info, check_episodes=check_episodes(args),
                                              allow_incomplete=args.lca["allow_incomplete"])
        seconds = time.perf_counter() - start
        if reused:  # (training logged each group's line as it finished)
            _log.info(f"LCA potentials for {path} with these settings exist: reused {folder}")
            for group, metrics in meta["metrics"]["groups"].items():
                _log.info(f"  {group}: {summary(metrics)}")
        else:
            _log.info(f"Trained LCA potentials in {seconds:.1f}s: {folder}")
        info = {"folder": folder, "reused": reused, "rankings": meta["rankings"],
                "potential_sha256": meta["potential_sha256"], "metrics": meta["metrics"],
                "normalisation": meta["normalisation"], "seconds": seconds}
        if _run is not None:
            _run.info["lca_potential"] = info
        return info
