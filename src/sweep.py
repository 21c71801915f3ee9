"""Sweeps on Ray Tune: many normal runs (algorithms x envs x grid values x seeds), on this machine or a Ray cluster.

    python src/sweep.py config/sweeps/online_core.yaml              # or just: online_core
    python src/sweep.py online_core --address auto                  # join the running Ray cluster (ray start ...)
    python src/sweep.py online_core --resume                        # finish a sweep whose driver was stopped
    python src/sweep.py --config=qmix --env-config=lbf --seeds 5 --grid lr=[0.0005,0.001] with t_max=100000
    python src/sweep.py online_core --check                         # build and check every trial, list them, run none

Every trial is `src/main.py --config=... --env-config=... with ...`, writing its Sacred folder and checkpoints as usual;
results/sweeps/<name>/manifest.json lists the trials (status, Sacred run, node, error). Sweep files: src/sweeps/spec.py.
"""
import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from utils.cli import split_argv  # noqa: E402
from utils.config import ConfigError  # noqa: E402
from utils.signals import exit_status, stopped_by  # noqa: E402

USAGE = """python src/sweep.py SWEEP [--address auto|HOST:PORT|ray://HOST:PORT] [--resume] [--max-concurrent N]
       python src/sweep.py --config=ALG[,ALG] --env-config=ENV[,ENV] [--seeds N] [--grid KEY=[V,...]] ... with K=V ...
  SWEEP: a sweep file (config/sweeps/<name>.yaml, or its name); with --resume also a folder results/sweeps/<name>"""


def parser():
    p = argparse.ArgumentParser(prog="python src/sweep.py", usage=USAGE, description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", nargs="?", help="sweep file or name (config/sweeps/); with --resume also a sweep folder")
    p.add_argument("--address", help="join a running Ray cluster (auto, HOST:PORT or ray://HOST:PORT); "
                                     "default: start a local Ray")
    p.add_argument("--resume", action="store_true", help="finish the sweep: completed trials (Sacred status) are "
                                                         "kept, interrupted ones resume from their latest checkpoint")
    p.add_argument("--max-concurrent", type=int, help="at most N trials at once (default: as resources allow)")
    p.add_argument("--name", help="the sweep's name (its folder results/sweeps/<name>); default: the file's")
    p.add_argument("--check", action="store_true", help="build and check every trial's config, list the trials, "
                                                        "run nothing")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    inline = p.add_argument_group("inline sweep (instead of a file)")
    inline.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 1)")
    inline.add_argument("--grid", action="append", default=[], metavar="KEY=[V,...]", help="a grid axis (repeat)")
    inline.add_argument("--cpus-per-trial", type=float)
    inline.add_argument("--gpus-per-trial", type=float)
    inline.add_argument("--retries", type=int)
    inline.add_argument("--metric")
    return p


def load(opts, alg, env, updates):
    from sweeps.manifest import read_manifest
    from sweeps.spec import inline_sweep, load_sweep

    if alg or env:
        if opts.sweep:
            raise ConfigError("give a sweep file or --config/--env-config, not both")
        if not (alg and env):
            raise ConfigError("an inline sweep needs both --config=ALG[,ALG] and --env-config=ENV[,ENV]")
        return inline_sweep(alg.split(","), env.split(","), 1 if opts.seeds is None else opts.seeds, opts.grid,
                            updates, name=opts.name,
                            cpus_per_trial=opts.cpus_per_trial, gpus_per_trial=opts.gpus_per_trial,
                            retries=opts.retries, metric=opts.metric)
    if not opts.sweep:
        raise ConfigError(f"give a sweep file or an inline sweep\n{USAGE}")
    if updates or opts.grid or opts.seeds is not None:
        raise ConfigError("--seeds, --grid and `with` belong to an inline sweep; a sweep file sets them itself")
    if opts.resume and os.path.isdir(opts.sweep):
        manifest = read_manifest(opts.sweep)
        if manifest is None:
            raise ConfigError(f"{opts.sweep} holds no manifest.json: not a sweep folder")
        return manifest["spec"]
    spec = load_sweep(opts.sweep)
    if opts.name:
        spec["name"] = opts.name
    return spec


def main(argv):
    alg, env, updates, rest = split_argv(argv[1:])
    opts = parser().parse_args(rest)
    try:
        spec = load(opts, alg, env, updates)
        from sweeps import driver

        if opts.check:
            from sweeps.spec import expand, validate

            trials = validate(expand(spec))
            for t in trials:
                print(f"{t['id']}: python src/main.py {' '.join(driver.trial_command({**t, 'label': 'sweep'})[3:])}")
            print(f"sweep {spec['name']}: {len(trials)} trials, every config checked")
            return 0
        sweep = driver.prepare(spec, resume=opts.resume)
    except ConfigError as e:
        print(f"{e.label}: {e}", file=sys.stderr)
        return 2
    try:
        return driver.run(sweep, address=opts.address, max_concurrent=opts.max_concurrent, num_cpus=opts.num_cpus)
    except KeyboardInterrupt as e:  # a second Ctrl-C or SIGTERM (the first lets the trials save, sweeps.driver)
        print(f"{stopped_by(e)} again: stopped at once; trials still running ended with their Ray workers. Finish "
              f"the sweep with: python src/sweep.py {driver.resume_target(sweep)} --resume", file=sys.stderr)
        return exit_status(e)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
