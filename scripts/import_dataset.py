"""Import a public offline-MARL dataset into this project's HDF5 format (for `run: offline`).

    python scripts/import_dataset.py offpymarl dataset/gymma/lbf/expert/<token> --env-config=lbf_8x8_2p_2f_coop \\
        --out results/datasets/Foraging-8x8-2p-2f-coop-v3/offpymarl_expert.h5 --quality expert \\
        with env_args.time_limit=25

Sources are OffPyMARL part files or folders of them (every *.h5 inside, part_2 before part_10). The env is
built from our env config (plus `with` overrides) to check that the data fits it; its name and env_args are
recorded so that `--config=bc --env-config=<same> with offline_dataset=<out>` accepts the file.
--time-limit-terminals: how terminals at the time limit are read (see src/offline/importers.py): auto
(default) truncates them when every episode reaching the limit ends with a terminal (OffPyMARL's gymma
datasets), keep leaves them, truncate always converts them.
"""
import argparse
import sys
from types import SimpleNamespace

import _bootstrap  # noqa: F401 (src/ on sys.path)

from offline import DatasetError
from offline.importers import TIME_LIMIT_MODES, import_offpymarl
from utils.config import ConfigError, build_config


def env_of(env_config, updates):
    """(env name, env_args without the seed, get_env_info()) of an env config with `with` overrides."""
    from envs import env_from_args
    from utils.cli import parse_updates  # imported late: it loads Sacred

    config = build_config("bc", env_config, parse_updates(updates))
    env_args = {k: v for k, v in config["env_args"].items() if k != "seed"}
    args = SimpleNamespace(**dict(config, env_args=dict(env_args, seed=config.get("seed") or 0)))
    env = env_from_args(args)
    try:
        return config["env"], env_args, env.get_env_info()
    finally:
        env.close()


def main(argv=None):
    from utils.cli import split_argv  # imported late: it loads Sacred

    _, env_config, updates, argv = split_argv(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=["offpymarl"])
    parser.add_argument("sources", nargs="+", help="part files or folders of them")
    parser.add_argument("--out", required=True, help="the dataset file to write")
    parser.add_argument("--quality", default="unknown", help="quality name of every agent (expert, medium, ...)")
    parser.add_argument("--time-limit-terminals", default="auto", choices=TIME_LIMIT_MODES)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not env_config:
        parser.error("--env-config=<our env config> is required (config/envs/<name>.yaml)")
    try:
        env, env_args, env_info = env_of(env_config, updates)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    try:
        s = import_offpymarl(args.sources, args.out, env, env_args, env_info=env_info,
                             time_limit_terminals=args.time_limit_terminals, quality=args.quality,
                             progress=not args.no_progress, overwrite=args.overwrite)
    except (DatasetError, FileExistsError) as e:
        print(f"import error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {s['out']}: {s['episodes']} episodes from {s['parts']} part file(s), {s['transitions']} "
          f"transitions, {s['terminated']} terminals, {s['truncated']} truncations, mean return "
          f"{s['mean_return']:.4g}")
    print(f"time limit {s['time_limit']}: rule '{s['time_limit_rule']}' ({s['time_limit_terminals_truncated']} "
          f"terminals at the limit read as truncations); {s['cut_after_terminal']} episode(s) cut at their "
          f"first terminal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
