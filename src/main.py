"""Entry point, pymarl-compatible:

    python src/main.py --config=qmix --env-config=lbf with t_max=200000 env_args.time_limit=50

Configs merge as default <- env <- alg <- `with` overrides (see utils/config.py). Unknown
override keys are rejected with suggestions; pymarl spellings are accepted as aliases.
"""
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from sacred import SETTINGS, Experiment  # noqa: E402
from sacred.observers import FileStorageObserver  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds  # noqa: E402

from utils.cli import parse_updates, split_argv  # noqa: E402,F401 (split_argv re-exported)
from utils.config import ConfigError, build_config  # noqa: E402
from utils.logging import get_logger  # noqa: E402

SETTINGS["CAPTURE_MODE"] = "sys"  # "fd" breaks on some platforms and hides nothing we need


def mongo_observer(config, client_factory=None):
    """A Sacred MongoObserver on `mongo_url` / `mongo_db`. `client_factory(url)` returns a MongoClient
    (pymongo's by default; tests pass an in-memory one)."""
    import gridfs
    import pymongo
    from sacred.observers import MongoObserver

    client = (client_factory or pymongo.MongoClient)(config["mongo_url"])
    db = client[config["mongo_db"]]
    return MongoObserver.create_from(db["runs"], gridfs.GridFS(db), metrics_collection=db["metrics"])


def make_experiment(config, mongo_client_factory=None):
    # imported here so that config errors are reported before torch and the envs load
    from run import REGISTRY as run_REGISTRY
    from utils.paths import env_label, results_path
    from utils.seeding import set_seeds

    ex = Experiment("pymarl", save_git_info=False)
    ex.logger = get_logger()
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    ex.add_config(config)
    sacred_dir = os.path.join(results_path(config), "sacred", config["name"], env_label(config))
    ex.observers.append(FileStorageObserver(sacred_dir))
    if config.get("mongo_url"):
        ex.observers.append(mongo_observer(config, mongo_client_factory))

    @ex.main
    def my_main(_run, _config, _log):
        config = {k: v for k, v in _config.items()}
        config["env_args"] = dict(config["env_args"], seed=config["seed"])
        set_seeds(config["seed"])
        if config["torch_threads"] > 0:
            import torch

            torch.set_num_threads(config["torch_threads"])
        run_name = "evaluate" if config["evaluate"] else config["run"]
        if run_name not in run_REGISTRY:
            raise ValueError(f"unknown run '{run_name}'; valid: {sorted(run_REGISTRY)}")
        run_REGISTRY[run_name](_run, config, _log)

    return ex


def main(argv):
    alg, env, updates, rest = split_argv(argv[1:])
    try:
        if alg is None:
            raise ConfigError("give an algorithm config: --config=<name> (see config/algs/ and config/runs/)")
        if env is None:
            raise ConfigError("give an env config: --env-config=<name> (see config/envs/)")
        config = build_config(alg, env, parse_updates(updates))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    config.setdefault("name", alg)
    if config.get("seed") is None:
        config.pop("seed", None)  # Sacred draws a seed and records it
    ex = make_experiment(config)
    try:
        run = ex.run_commandline([argv[0], *rest])
    except SystemExit as e:  # Sacred exits after printing a failed run's traceback
        return e.code if isinstance(e.code, int) else 1
    return 0 if run is not None and run.status == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
