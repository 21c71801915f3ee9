"""Entry point, pymarl-compatible:

    python src/main.py --config=qmix --env-config=lbf with t_max=200000 env_args.time_limit=50

Configs merge as default <- env <- alg <- `with` overrides (see utils/config.py). Unknown
override keys are rejected with suggestions; pymarl spellings are accepted as aliases.

    python src/main.py --rerun results/sacred/<alg>/<env>/<id> [with key=value ...]

runs again what a run's folder records (utils/provenance.py): its configs, overrides and config values, seed included.
"""
import contextlib
import os
import shutil
import signal
import sys
import threading
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from sacred import SETTINGS, Experiment  # noqa: E402
from sacred.observers import FileStorageObserver  # noqa: E402
from sacred.utils import SacredError, apply_backspaces_and_linefeeds  # noqa: E402

from utils.cli import (  # noqa: E402,F401
    HELP_FLAGS,
    check_sacred_args,
    help_text,
    parse_updates,
    repeated_keys,
    split_argv,
)
from utils.config import ConfigError, build_config, canonicalize, test_episodes  # noqa: E402
from utils.logging import console_recorded, get_logger  # noqa: E402
from utils.provenance import provenance, rerun_config  # noqa: E402
from utils.signals import STOPPING, Terminated, exit_status, stop, stopped_by  # noqa: E402

# cout.txt: Sacred tees sys.stdout/sys.stderr ("fd" breaks on some platforms); the console handler writes to the
# sys.stderr of the moment (utils.logging.ConsoleHandler), so every log line of a run is captured
SETTINGS["CAPTURE_MODE"] = "sys"


def mongo_observer(config, client_factory=None):
    """A Sacred MongoObserver on `mongo_url` / `mongo_db`. `client_factory(url)` returns a MongoClient
    (pymongo's by default; tests pass an in-memory one)."""
    import gridfs
    import pymongo
    from sacred.observers import MongoObserver

    client = (client_factory or pymongo.MongoClient)(config["mongo_url"])
    db = client[config["mongo_db"]]
    return MongoObserver.create_from(db["runs"], gridfs.GridFS(db), metrics_collection=db["metrics"])


class RunExperiment(Experiment):
    """A Sacred Experiment whose runs record `meta` in run.json (under "meta": the configs and overrides as given,
    git, packages, machine; see utils/provenance.py) and start with `info` in info.json."""

    def __init__(self, *args, meta=None, info=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_meta, self.run_info = dict(meta or {}), dict(info or {})
        self.printed_before_run = ""  # the console output before the run (main.main): its cout.txt starts with it

    def run(self, command_name=None, config_updates=None, named_configs=(), info=None, meta_info=None, options=None):
        return super().run(command_name, config_updates, named_configs, {**self.run_info, **(info or {})},
                           {**self.run_meta, **(meta_info or {})}, options)

    def _create_run(self, *args, **kwargs):
        """The run, with `flush_records()`: a heartbeat now (metrics.json, info.json, cout.txt up to this moment; the
        run loop calls it at each checkpoint), serialised with Sacred's heartbeat thread (whose observer writes are
        not safe against each other)."""
        run = super()._create_run(*args, **kwargs)
        run.captured_out = self.printed_before_run  # Sacred's capture adds to it
        lock, beat = threading.Lock(), run._emit_heartbeat
        run.records_lock = lock  # captured_until_now reads the capture under it too

        def locked_beat():
            with lock:
                if threading.current_thread() is not threading.main_thread():
                    return beat()
                # at a checkpoint, in the main thread: Sacred rewrites metrics.json in place, so a Ctrl-C (SIGTERM)
                # now would leave it cut; the interrupt is held until the files are written
                held = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOPPING))
                try:
                    return beat()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)

        run._emit_heartbeat = run.flush_records = locked_beat  # the heartbeat thread takes it when the run starts
        return run


class RunFileStorageObserver(FileStorageObserver):
    """Sacred's FileStorageObserver, whose cout.txt also ends with how the run ended when it failed (the traceback,
    as run.json's fail_trace) or was interrupted, after the console output up to it (captured_until_now)."""

    def started_event(self, *args, **kwargs):
        self.run_id = super().started_event(*args, **kwargs)  # run_entry has no _id in a FileStorageObserver
        return self.run_id

    def _append_cout(self, text):
        self.cout = (self.cout or "") + text
        self.save_cout()

    def failed_event(self, fail_time, fail_trace):
        super().failed_event(fail_time, fail_trace)
        self._append_cout("".join(fail_trace or []) + f"Run {self.run_id} FAILED\n")

    def interrupted_event(self, interrupt_time, status):
        super().interrupted_event(interrupt_time, status)
        # Sacred calls this while it handles the interrupt: the exception says which signal it was
        how = "SIGTERM" if isinstance(sys.exc_info()[1], Terminated) else "interrupted, e.g. Ctrl-C"
        self._append_cout(f"Run ended: {status} ({how})\n")


def make_experiment(config, mongo_client_factory=None, meta=None, info=None):
    """The Sacred experiment of one run of `config`. `meta`: its provenance (utils.provenance.provenance; by default
    the config's name and env config with no overrides); `info`: what its info.json starts with."""
    # imported here so that config errors are reported before torch and the envs load
    from run import REGISTRY as run_REGISTRY
    from utils.paths import env_label, results_path
    from utils.provenance import provenance
    from utils.seeding import set_seeds

    if meta is None:
        meta = provenance(config.get("name"), config.get("env_config"), [], {})
    ex = RunExperiment("pymarl", save_git_info=False, meta=meta, info=info)  # git: meta["git"] (provenance.git_info)
    for package, version in meta.get("packages", {}).items():
        try:
            ex.add_package_dependency(package, version.split("+")[0])  # run.json's experiment.dependencies too
        except ValueError:  # a version Sacred cannot parse: meta["packages"] has it
            pass
    ex.logger = get_logger()
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    ex.add_config(config)
    sacred_dir = os.path.join(results_path(config), "sacred", config["name"], env_label(config))
    ex.observers.append(RunFileStorageObserver(sacred_dir))
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
        with captured_until_now(_run), config_failure_cleanup(ex), failure_recorded(_run):
            run_REGISTRY[run_name](_run, config, _log)

    return ex


class RunConfigError(SacredError):
    """A ConfigError found only once the run was building (Sacred prints its message, no traceback)."""

    def __init__(self, message):
        super().__init__(message, print_traceback=False)


@contextlib.contextmanager
def config_failure_cleanup(ex):
    """A ConfigError (or a DatasetError: a dataset the run cannot use, named by the message) raised inside the run
    fails it as a RunConfigError (one line, no traceback) and notes in `ex.config_failure` the TensorBoard folder the
    run created (run.setup records it in the run's info; a resumed run's continued folder is not its own); main()
    then removes it and the run's Sacred folder (remove_failed_run) and exits 2. A DatasetError's run folder is kept:
    its info.json records the failure, which tells a sweep not to retry the trial (sweeps.trial.repeated_failure)."""
    try:
        yield
    except ConfigError as e:
        tb = ex.current_run.info.get("tensorboard") if ex.current_run is not None else None
        ex.config_failure = [tb["dir"]] if tb and tb["created"] else []
        raise RunConfigError(f"{e.label}: {e}") from e
    except Exception as e:
        # a DatasetError comes only from a run that imported offline/ (and so h5py): the others never import it
        dataset_format = sys.modules.get("offline.format")
        if dataset_format is None or not isinstance(e, dataset_format.DatasetError):
            raise
        ex.dataset_failure = True
        raise RunConfigError(f"dataset error: {e}") from e


@contextlib.contextmanager
def captured_until_now(run):
    """A run that raises (an error, Ctrl-C) keeps its console output up to then: Sacred's last heartbeat reads the
    captured output only while the capture is open, so it is read here, before the exception leaves it."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception), getattr(run, "records_lock", None) or contextlib.nullcontext():
            run._get_captured_output()
        raise


@contextlib.contextmanager
def failure_recorded(run):
    """A run that raises records the error in its info (`failure`: class, message, repeats_on_retry). An error class
    that sets `repeats_on_retry` (the same config and data would fail the same way: a NaN loss replayed from the
    checkpoint, a dataset the run cannot use, generation that cannot go on) tells a sweep not to retry the trial
    (sweeps.trial); the info is saved by Sacred's last heartbeat, before the process exits."""
    try:
        yield
    except Exception as e:
        with contextlib.suppress(Exception):  # recording must never replace the run's own error
            run.info["failure"] = {"error": type(e).__name__, "message": str(e)[:4000],
                                   "repeats_on_retry": bool(getattr(e, "repeats_on_retry", False))}
        raise


def remove_failed_run(ex):
    """Remove what a run that failed on a config error wrote: its Sacred run folder and TensorBoard folders, and the
    folders above them (up to sacred/ and tb_logs/) that nothing else is left in (Sacred's _sources/ copy included)."""
    observers = [o for o in ex.observers if isinstance(o, FileStorageObserver) and o.dir]  # RunFileStorageObserver
    tb_folders = list(getattr(ex, "config_failure", None) or [])
    for folder in [o.dir for o in observers] + tb_folders:
        shutil.rmtree(folder, ignore_errors=True)
    for o in observers:  # basedir: results/sacred/<name>/<env label>
        if os.path.isdir(o.basedir) and not [d for d in os.listdir(o.basedir) if d.isdigit()]:
            shutil.rmtree(o.basedir, ignore_errors=True)
        _remove_empty(os.path.dirname(o.basedir), os.path.dirname(os.path.dirname(o.basedir)))
    for folder in tb_folders:
        _remove_empty(os.path.dirname(folder))


def _remove_empty(*folders):
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only if empty


def pop_rerun(argv):
    """(the folder of `--rerun FOLDER` / `--rerun=FOLDER` or None, argv without it)."""
    for i, a in enumerate(argv):
        if a == "--rerun":
            if i + 1 >= len(argv):
                return "", argv[:i]
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if a.startswith("--rerun="):
            return a.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def checkpoint_settings(config):
    """A run from a checkpoint (checkpoint_path=): resuming takes the checkpoint's seed (a different seed= is refused:
    the RNG states come from the checkpoint, so it would only rename the run), and is refused when its t_max (offline:
    offline_steps) does not go past the checkpoint's step or its env or env_args differ from the checkpoint's;
    resuming and evaluating check the checkpoint's saved config against the requested algorithm and network
    settings now, before the run starts (ConfigError naming the mismatch). The env's shapes are checked once the
    run has built the env (run/loop.load)."""
    if config.get("run") not in ("online", "offline", "evaluate") or not config.get("checkpoint_path"):
        return  # evaluating without one: refused by run/preflight.check_combinations
    evaluate = bool(config.get("evaluate")) or config.get("run") == "evaluate"
    from utils.checkpoint import (  # imports torch: only when needed
        CheckpointError,
        check_checkpoint_config,
        locate_checkpoint,
    )

    try:
        saved = check_checkpoint_config(config["checkpoint_path"], config["load_step"], config, evaluate=evaluate,
                                        with_env=False)
        path = locate_checkpoint(config["checkpoint_path"], config["load_step"])[1]
    except (CheckpointError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from e
    if evaluate:
        return
    name = os.path.basename(os.path.normpath(path))
    key, unit = ("t_max", "t_env") if config["run"] == "online" else ("offline_steps", "gradient step")
    # the run's own budget (a retry of a run that died after its last checkpoint) only finishes it: its final
    # evaluation and records; another budget that does not go past the checkpoint trains nothing: refused
    if name.isdigit() and config.get(key) is not None and config[key] <= int(name) and not finishing(path, saved,
                                                                                                      key, config):
        raise ConfigError(f"{key}={config[key]} does not go past the checkpoint's {unit} {name} ({path}): nothing "
                          f"would be trained; give {key} greater than {name} (the run's total, e.g. "
                          f"{key}={2 * max(int(name), 1)})")
    theirs = None if saved is None else saved.get("seed")
    if theirs is not None:
        if config.get("seed") is None:
            config["seed"] = theirs
        elif config["seed"] != theirs:
            raise ConfigError(f"seed={config['seed']} differs from the seed of the checkpoint's run ({theirs}): a "
                              f"resumed run continues from the checkpoint's RNG states, so another seed would only "
                              f"rename it; leave seed= out (or give seed={theirs}), or start a new run without "
                              f"checkpoint_path for seed {config['seed']}")


def record_test_episodes(config, given):
    """Evaluations run whole rounds of batch_size_run envs: a test_nepisode that is not a multiple of batch_size_run
    runs test_episodes(config) episodes, and that is the value the run's config.json records. Said as a warning when
    the user gave test_nepisode or batch_size_run (`given`: the `with` updates), else (a shipped config's defaults,
    e.g. 32 test episodes with mappo's 10 envs) as an info line."""
    used, asked, per_round = test_episodes(config), config["test_nepisode"], config["batch_size_run"]
    if used == asked:
        return
    config["test_nepisode"] = used
    say = get_logger().warning if {"test_nepisode", "batch_size_run"} & set(given) else get_logger().info
    say(f"test_nepisode={asked} is not a multiple of batch_size_run={per_round}: each evaluation runs {used} test "
        f"episodes ({used // per_round} round{'s' if used > per_round else ''} of {per_round} envs), the value "
        f"config.json records; give a multiple of {per_round} to choose another")


def finishing(path, saved, key, config):
    """Whether `config`'s budget (`key`: t_max or offline_steps) is the one that trained up to the checkpoint at
    `path` (its run_state's config: a raised t_max included; else the model folder's config.json, `saved`)."""
    from utils.checkpoint import CheckpointError, load_run_state

    try:
        state = load_run_state(path) or {}
    except (CheckpointError, OSError, RuntimeError):  # damaged: the load reports it; here, the folder's config
        state = {}
    trained = state.get("config") if isinstance(state.get("config"), dict) else saved
    return trained is not None and trained.get(key) == config.get(key)


@contextlib.contextmanager
def second_interrupt_exits():
    """The first Ctrl-C or SIGTERM stops the run as always (KeyboardInterrupt, Terminated for SIGTERM: what is done is
    kept, the run is recorded as INTERRUPTED, exit status 130, 143 for SIGTERM); a second one (either), while the run
    winds down or after it (the process may still hang on its way out: a thread, a child), ends the process at once
    with status 128 + its signal and one line: never a traceback, never a signal that does nothing (once Python
    finalizes, SIGINT has its default action: it ends the process, status 130 to a shell). Each signal only where it
    has its default handler (Python's for SIGINT, the system's for SIGTERM) and in the main thread; the defaults come
    back afterwards unless an interrupt came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    owned = [s for s, handler in defaults.items() if signal.getsignal(s) is handler]
    interrupted = []

    def again(signum, frame):
        os.write(2, f"interrupted again ({STOPPING[signum]}): exiting now, status {128 + signum}\n".encode())
        os._exit(128 + signum)

    def first(signum, frame):
        interrupted.append(True)
        for s in owned:
            signal.signal(s, again)
        raise stop(signum)

    first.deferrable = True  # a training loop may take over from it (run.interrupt.CtrlC) and give it back
    for s in owned:
        signal.signal(s, first)
    try:
        yield
    finally:
        for s in owned:
            signal.signal(s, again if interrupted else defaults[s])


def prepare(argv):
    """The experiment of the run that `argv` asks for and Sacred's argv for it, or the exit status (help, an error)."""
    rerun, argv = pop_rerun(argv)
    rerun_cfg, notes = None, []
    alg, env, updates, rest = split_argv(argv[1:])
    repeated = repeated_keys(updates)  # the user's own (a rerun's updates add the run's recorded ones)
    if any(a in HELP_FLAGS for a in rest):
        print(help_text())
        return 0
    try:
        check_sacred_args(rest)  # a misspelt `with` or a stray word: Sacred would exit with no message
        if rerun is not None:  # --rerun <sacred run folder>: its configs, overrides and recorded values
            if alg or env:
                raise ConfigError("--rerun takes --config and --env-config from the run folder; give only `with` "
                                  "overrides (they apply on top of the run's)")
            rerun, alg, env, updates, rerun_cfg, notes = rerun_config(rerun, updates)
        if alg is None:
            raise ConfigError("give an algorithm config: --config=<name> (see config/algs/ and config/runs/; --help "
                              "lists them)")
        if env is None:
            raise ConfigError("give an env config: --env-config=<name> (see config/envs/; --help lists them)")
        config = rerun_cfg if rerun else build_config(alg, env, parse_updates(updates))
        config.setdefault("name", alg)
        checkpoint_settings(config)
        from run.preflight import check_config  # imports torch and the registries: after the cheap checks

        check_config(config)  # registry names, env arguments: every check that can be made before Sacred starts
    except ConfigError as e:
        print(f"{e.label}: {e}", file=sys.stderr)
        return 2
    config.setdefault("name", alg)
    record_test_episodes(config, parse_updates(updates))
    for note in repeated:
        get_logger().warning(note)
    from envs import env_config_notes

    for note in env_config_notes(config["env"], dict(config.get("env_args") or {})):
        get_logger().warning(note)
    if config.get("seed") is None:
        config.pop("seed", None)  # Sacred draws a seed and records it
    for note in notes:
        get_logger().warning(f"rerun of {rerun}: {note}")
    meta = provenance(alg, env, updates, canonicalize(parse_updates(updates)), rerun_of=rerun)
    return make_experiment(config, meta=meta, info={"rerun_of": rerun} if rerun else None), [argv[0], *rest]


def main(argv):
    with console_recorded() as printed:  # config warnings come before Sacred's capture: cout.txt starts with them
        prepared = prepare(argv)
    if isinstance(prepared, int):
        return prepared
    ex, sacred_argv = prepared
    ex.printed_before_run = "".join(printed)
    try:
        with second_interrupt_exits():
            run = ex.run_commandline(sacred_argv)
    except KeyboardInterrupt as e:  # the run said where it stopped and how to resume (run/online.py); no traceback
        print(f"interrupted ({stopped_by(e)}): the run is recorded as INTERRUPTED", file=sys.stderr)
        return exit_status(e)
    except SystemExit as e:  # Sacred exits after printing a failed run's traceback (or with a message as the code)
        if getattr(ex, "config_failure", None) is not None:  # a config error found while building: no litter
            remove_failed_run(ex)
            return 2
        if getattr(ex, "dataset_failure", False):  # its message is printed (one line); the folder records it
            return 2
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else 1
    return 0 if run is not None and run.status == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
