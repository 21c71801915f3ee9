"""Builds what every run mode needs from the config: args, logger, runner, buffer, controller, learner."""
import contextlib
import copy
import os
import pprint
from datetime import datetime
from types import SimpleNamespace as SN

import torch as th

from components.episode_buffer import EpisodeBatch, ReplayBuffer, episode_scheme  # noqa: F401 (re-exported)
from controllers import REGISTRY as mac_REGISTRY
from learners import REGISTRY as le_REGISTRY
from learners.base import Learner
from qllm.features import make_features, wants_features
from runners import REGISTRY as r_REGISTRY
from shapers import REGISTRY as shaper_REGISTRY
from shapers import NoShaper
from utils.checkpoint import checkpoint_steps, folder_step, locate_checkpoint
from utils.config import ConfigError, test_episodes
from utils.files import FolderLock
from utils.logging import Logger
from utils.paths import RESULTS_ROOT, env_label, results_path  # noqa: F401 (RESULTS_ROOT re-exported)
from utils.seeding import preserved_rng


def select_device(config, _log, _run=None):
    """use_cuda=True (the default) means the GPU when one is present. The device is said once, in the run's header,
    and recorded in its info (info.json: device); the CPU fallback is a warning only when use_cuda=True was given on
    the command line (the run's `with` overrides), since the default asks for nothing more than 'a GPU if any'."""
    asked, available = bool(config["use_cuda"]), th.cuda.is_available()
    config["use_cuda"] = asked and available
    device = {"device": "cuda" if config["use_cuda"] else "cpu", "use_cuda": asked, "cuda_available": available}
    if config["use_cuda"]:
        device["gpu"] = th.cuda.get_device_name()
        _log.info(f"Device: cuda ({device['gpu']})")
    elif not asked:
        _log.info("Device: cpu (use_cuda=False)")
    elif "use_cuda" in _overrides(_run):
        _log.warning("use_cuda=True was given but CUDA is not available: running on the CPU")
    else:
        _log.info("Device: cpu (CUDA is not available; use_cuda=True, the default, uses a GPU when there is one)")
    if _run is not None:
        _run.info["device"] = device


def _overrides(_run):
    """The run's `with` overrides as parsed (recorded in its meta info), or {} where the run has none."""
    meta = getattr(_run, "meta_info", None)
    return (meta.get("config_updates") if isinstance(meta, dict) else None) or {}


# run modes that write offline datasets, which store one team reward per step
DATASET_RUNS = ("collect", "augment")
# run modes that build a learner (run.setup.build): its class says whether it trains on per-agent rewards
LEARNER_RUNS = ("online", "offline", "evaluate")


def check_reward_settings(config):
    """Refuse (ConfigError) per-agent rewards where the run cannot use them: a dataset run, or a learner that trains
    on one team reward (see per_agent_rewards). Run by src/main.py's preflight, before the Sacred run starts."""
    run = "evaluate" if config.get("evaluate") else config.get("run", "online")
    if not config.get("common_reward", True) and run in DATASET_RUNS:
        raise ConfigError(f"run: {run} writes offline datasets, which store one team reward per step: "
                          f"common_reward=False (per-agent rewards) cannot be stored there; use common_reward=True")
    if run in LEARNER_RUNS and config.get("shaper") in shaper_REGISTRY and config.get("learner") in le_REGISTRY:
        per_agent_rewards(config)


def make_args(config, _log, _run=None):
    select_device(config, _log, _run)
    check_reward_settings(config)
    config["test_nepisode"] = test_episodes(config)  # src/main.py has recorded this value already
    args = SN(**config)
    args.device = "cuda" if args.use_cuda else "cpu"
    return args


def per_agent_rewards(config, shaper_per_agent=None):
    """True when the run trains on per-agent rewards (common_reward=False, or a shaper with `per_agent`; by default
    the shaper class's declaration). A learner that trains on one team reward (`per_agent_rewards = False` on its
    class: q_learner, the offline learners) is refused (ConfigError), before anything is built."""
    if config["shaper"] not in shaper_REGISTRY:
        raise ConfigError(f"unknown shaper '{config['shaper']}'; valid: {sorted(shaper_REGISTRY)}")
    if shaper_per_agent is None:
        shaper_per_agent = shaper_REGISTRY[config["shaper"]].per_agent
    reasons = ([] if config["common_reward"] else ["common_reward=False"]) + (
        [f"shaper={config['shaper']}"] if shaper_per_agent else [])
    learner_class = le_REGISTRY.get(config["learner"])
    if reasons and learner_class is not None and not getattr(learner_class, "per_agent_rewards", False):
        name = config.get("name", config["learner"])
        raise ConfigError(f"{name} (learner: {config['learner']}) trains on one team reward: "
                          f"{' and '.join(reasons)} gives per-agent rewards, which need an actor-critic learner "
                          f"such as ippo/mappo (--config=ippo or --config=mappo); or keep common_reward=True and "
                          f"shaper=none")
    return bool(reasons)


@contextlib.contextmanager
def simple_run(config, _log, _run=None):
    """(args, logger) of a run mode that builds no runner or learner (label, shape, augment): the checked args and a
    logger connected to the Sacred run, finished when the block ends (also when it raises)."""
    args = make_args(config, _log, _run)
    logger = Logger(_log)
    if _run is not None:
        logger.setup_sacred(_run)
    try:
        yield args, logger
    finally:
        logger.finish()


def build(_run, config, _log):
    args = make_args(config, _log, _run)
    per_agent_rewards(config)  # refused before the envs and the learner are built
    logger = Logger(_log)
    _log.info("Experiment parameters:\n" + pprint.pformat(config, indent=4, width=1))
    args.results_dir = results_path(config)
    # the model folder's FolderLock: taken when resuming into it, else at the first save (loop.save)
    args.unique_token, args.model_dir, model_lock, resume_step = model_folder(args, config, _run, _log)
    if args.use_tensorboard:
        tb_dir = os.path.join(args.results_dir, "tb_logs", args.unique_token)
        created = not os.path.isdir(tb_dir)  # a resumed run continues its run's folder
        # events after the checkpoint that a killed process wrote are dropped; the checkpoint's own step was tested
        # and logged before its save, so it is kept (an offline learner's stats at that step may come after the save:
        # an exact resume writes them again with the same values)
        purge = None if created or resume_step is None else resume_step + 1
        logger.setup_tb(tb_dir, purge_step=purge)
        if _run is not None:  # where the events are; a run failing on a config error removes the folder it created
            _run.info["tensorboard"] = {"dir": tb_dir, "created": created}
    logger.setup_sacred(_run)

    # per-state batch fields the mixer declares (qllm: the TFCAF's w, b); evaluation trains nothing and needs none.
    # The sandboxed worker process starts now, so its start-up overlaps building the envs and the learner.
    evaluating = args.evaluate or args.run == "evaluate"
    worker_process = None
    if not evaluating and wants_features(args):
        from qllm.worker import prestart  # imported on use: only a run whose mixer wants features starts the worker

        worker_process = prestart()
    runner = r_REGISTRY[args.runner](args=args, logger=logger)
    env_info = runner.get_env_info()
    args.n_agents = env_info["n_agents"]
    args.n_actions = env_info["n_actions"]
    args.state_shape = env_info["state_shape"]
    args.obs_shape = env_info["obs_shape"]
    args.episode_limit = env_info["episode_limit"]

    features = []
    try:
        ctx = _build_rest(_run, args, config, logger, runner, env_info, evaluating, worker_process, features, _log)
        ctx.model_lock = model_lock
        return ctx
    except BaseException:  # no worker process outlives a run that failed to build
        for provider in features:
            provider.close()
        if worker_process is not None:
            worker_process.close()
        if model_lock is not None:
            model_lock.release()
        raise


def model_folder(args, config, _run, _log):
    """(unique_token, model folder, its FolderLock when resuming into it, else None, the checkpoint's step then, else
    None) of the run: results/models/<name>_seed<seed>_<env>_<time>, or, resuming (checkpoint_path, not evaluating),
    the folder of the checkpoint it continues: its new checkpoints go beside the old ones, and TensorBoard continues
    in tb_logs/<the same token> from that step. A checkpoint that is not its folder's latest would interleave two
    histories there: that run continues in a new folder (and says so). The run's info `resumed_from` records the
    checkpoint and where the new checkpoints go."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    token = f"{args.name}_seed{args.seed}_{env_label(config)}_{stamp}"
    new_dir = os.path.join(args.results_dir, "models", token)
    lock = step = None
    if not args.checkpoint_path or args.evaluate or args.run == "evaluate":
        return token, new_dir, lock, step
    run_dir, path = locate_checkpoint(args.checkpoint_path, args.load_step)
    later = [s for s in checkpoint_steps(run_dir) if s > folder_step(path)]
    if later or not os.path.basename(os.path.normpath(path)).isdigit():
        _log.warning(f"{path} is not the latest checkpoint of {run_dir} ({max(later)} is): continuing in a new "
                     f"model folder {new_dir}, so that the later checkpoints stay as they are" if later else
                     f"{path} is not in a run's model folder: continuing in a new model folder {new_dir}")
        model_dir = new_dir
    elif (lock := FolderLock.try_acquire(run_dir)) is None:
        _log.warning(f"another process is writing into {run_dir} (it holds the folder's lock): continuing in a new "
                     f"model folder {new_dir}, so that two runs never interleave their checkpoints")
        model_dir = new_dir
    else:
        model_dir = os.path.abspath(run_dir)
        token = os.path.basename(model_dir)
        step = folder_step(path)
    if _run is not None:
        _run.info["resumed_from"] = {"checkpoint": os.path.abspath(path), "model_dir": model_dir,
                                     "same_model_dir": model_dir != new_dir}
    return token, model_dir, lock, step


def sacred_run_ref(_run):
    """Where the Sacred run is recorded (its FileStorageObserver folder and id, and with a MongoObserver the
    database's name: the id is then the Mongo run's, which the FileStorage folder is named after too), for the
    checkpoints it saves; utils.runs chains a resumed run to it."""
    if _run is None or getattr(_run, "_id", None) is None:
        return None
    observers = getattr(_run, "observers", [])
    folders = [obs.dir for obs in observers if getattr(obs, "dir", None)]
    ref = {"id": _run._id, "dir": os.path.abspath(folders[0]) if folders else None}
    # a MongoObserver holds its runs collection (Sacred sorts it before the FileStorageObserver: its id is the run's)
    mongo = [obs.runs.database.name for obs in observers if hasattr(getattr(obs, "runs", None), "database")]
    if mongo:
        ref["mongo_db"] = mongo[0]
    return ref


def _build_rest(_run, args, config, logger, runner, env_info, evaluating, worker_process, features, _log):
    if not evaluating:  # a function validated again here, or one already trusted, leaves the run's draws alike
        with preserved_rng():
            features += make_features(args, _log, process=worker_process,
                                      run_info=None if _run is None else _run.info, config=config)
    # the shaper's artifacts (built, reused or given) and loading them (a potential's modules draw random inits)
    # leave the run's random draws as they were, so the agents start as a shaper=none run of the same seed
    with preserved_rng():
        shaper_info = env_info
        if args.shaper == "lca":  # its rankings and potentials, built when not given, and the env hooks it checks
            from run.lca_pipeline import prepare_lca  # imported on use: it imports run.label, which imports this
            shaper_info = prepare_lca(args, env_info, evaluating, _log, _run)
        # evaluation shapes nothing (test episodes are never shaped): no shaper is built, so it needs no artifact;
        # the batches keep the reward layout the shaper trained with (per-agent rewards)
        shaper = NoShaper(args, env_info) if evaluating else shaper_REGISTRY[args.shaper](args, shaper_info)
    shaper_per_agent = shaper_REGISTRY[args.shaper].per_agent
    extra = {k: v for provider in features for k, v in provider.scheme.items()}
    # per-agent rewards: `reward` [n_agents] and the env's team reward beside it (`team_reward`)
    scheme, groups, preprocess = episode_scheme(env_info, extra, per_agent_rewards(config, shaper_per_agent))
    learner_class = le_REGISTRY[args.learner]
    if not (isinstance(learner_class, type) and issubclass(learner_class, Learner)):
        raise TypeError(f"learner '{args.learner}' ({getattr(learner_class, '__name__', learner_class)}) must subclass "
                        f"learners.base.Learner, which declares what the run loops need to know (on_policy, offline, "
                        f"batches, uses_replay_buffer)")
    buffer = None
    if learner_class.uses_replay_buffer and not evaluating:
        buffer = ReplayBuffer(scheme, groups, args.buffer_size, env_info["episode_limit"] + 1,
                              preprocess=preprocess, device="cpu" if args.buffer_cpu_only else args.device)
    # the fields of every batch the learner sees, preprocessed ones (actions_onehot) included
    batch_scheme = EpisodeBatch(scheme, groups, 1, 1, preprocess=preprocess).scheme

    mac = mac_REGISTRY[args.mac](batch_scheme, groups, args)
    learner = learner_class(mac, batch_scheme, logger, args)
    # Acting always happens on the CPU: per-step GPU calls on tiny batches cost more than they save,
    # and the rollout batch stays in host memory. With a GPU the learner's weights are copied back after updates.
    acting_mac = mac
    if args.use_cuda:
        learner.cuda()
        acting_mac = copy.deepcopy(mac).to("cpu")
    # the runner shapes every training batch in this process (`none` costs nothing: the runner gets no shaper)
    runner.setup(scheme=scheme, groups=groups, preprocess=preprocess, mac=acting_mac,
                 shaper=None if isinstance(shaper, NoShaper) else shaper)

    def annotate(batch, t_env=None):
        """Before training episodes enter the buffer: fill the batch fields the mixer declares."""
        for provider in features:
            provider.annotate(batch, t_env)
        return batch

    return SN(run_info={} if _run is None else _run.info, sacred_run=sacred_run_ref(_run),
              args=args, config=config, logger=logger, runner=runner, buffer=buffer, mac=mac,
              acting_mac=acting_mac, learner=learner, features=features, shaper=shaper, annotate=annotate,
              # a Sacred heartbeat now (main.RunExperiment): run.loop.save calls it at every checkpoint
              flush_records=getattr(_run, "flush_records", None), last_checkpoint=None,
              env_rng_warned=False)  # an env that cannot save its RNG state is named once (run.loop.env_rng_states)
