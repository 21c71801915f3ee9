"""Builds what every run mode needs from the config: args, logger, runner, buffer, controller, learner."""
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
from qllm.worker import prestart as prestart_worker
from runners import REGISTRY as r_REGISTRY
from shapers import REGISTRY as shaper_REGISTRY
from utils.logging import Logger
from utils.paths import RESULTS_ROOT, env_label, results_path  # noqa: F401 (RESULTS_ROOT re-exported)


def make_args(config, _log):
    if config["use_cuda"] and not th.cuda.is_available():
        _log.warning("use_cuda is True but CUDA is not available: training on the CPU")
        config["use_cuda"] = False
    if not config["common_reward"]:
        raise ValueError("common_reward=False (per-agent rewards) is not supported yet; use common_reward=True")
    if config["test_nepisode"] < config["batch_size_run"]:
        config["test_nepisode"] = config["batch_size_run"]
    else:
        config["test_nepisode"] = (config["test_nepisode"] // config["batch_size_run"]) * config["batch_size_run"]
    args = SN(**config)
    args.device = "cuda" if args.use_cuda else "cpu"
    return args


def build(_run, config, _log):
    args = make_args(config, _log)
    logger = Logger(_log)
    _log.info("Experiment parameters:\n" + pprint.pformat(config, indent=4, width=1))
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    args.unique_token = f"{args.name}_seed{args.seed}_{env_label(config)}_{stamp}"
    args.results_dir = results_path(config)
    if args.use_tensorboard:
        logger.setup_tb(os.path.join(args.results_dir, "tb_logs", args.unique_token))
    logger.setup_sacred(_run)

    # per-state batch fields the mixer declares (qllm: the TFCAF's w, b); evaluation trains nothing and needs none.
    # The sandboxed worker process starts now, so its start-up overlaps building the envs and the learner.
    evaluating = args.evaluate or args.run == "evaluate"
    worker_process = prestart_worker() if not evaluating and wants_features(args) else None
    runner = r_REGISTRY[args.runner](args=args, logger=logger)
    env_info = runner.get_env_info()
    args.n_agents = env_info["n_agents"]
    args.n_actions = env_info["n_actions"]
    args.state_shape = env_info["state_shape"]
    args.obs_shape = env_info["obs_shape"]
    args.episode_limit = env_info["episode_limit"]

    features = []
    try:
        return _build_rest(_run, args, config, logger, runner, env_info, evaluating, worker_process, features, _log)
    except BaseException:  # no worker process outlives a run that failed to build
        for provider in features:
            provider.close()
        if worker_process is not None:
            worker_process.close()
        raise


def _build_rest(_run, args, config, logger, runner, env_info, evaluating, worker_process, features, _log):
    if not evaluating:
        features += make_features(args, _log, process=worker_process, run_info=None if _run is None else _run.info,
                                  config=config)
    if args.shaper not in shaper_REGISTRY:
        raise ValueError(f"unknown shaper '{args.shaper}'; valid: {sorted(shaper_REGISTRY)}")
    shaper = shaper_REGISTRY[args.shaper](args)
    extra = {k: v for provider in [*features, shaper] for k, v in provider.scheme.items()}
    scheme, groups, preprocess = episode_scheme(env_info, extra)
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
    runner.setup(scheme=scheme, groups=groups, preprocess=preprocess, mac=acting_mac)

    def annotate(batch, t_env=None):
        """Before training episodes enter the buffer: fill the batch fields the mixer declares, then shape rewards."""
        for provider in features:
            provider.annotate(batch, t_env)
        return shaper(batch, t_env)

    return SN(args=args, config=config, logger=logger, runner=runner, buffer=buffer, mac=mac,
              acting_mac=acting_mac, learner=learner, features=features, shaper=shaper, annotate=annotate)
