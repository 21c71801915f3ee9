"""Checks of a merged config that need the registries, run by src/main.py before the Sacred run starts, so that a
mistake is reported before anything is written (no run folder, no TensorBoard folder) and before any work.

`check_config(config)` raises ConfigError naming the key, the value, the valid values and the closest one: the run
mode, the component names (runner, mac, learner, agent, mixer, critic, shaper, action selector), the env and its
arguments (envs.check_env_args: unknown arguments, gymma ids), the labeler and augmenter names, the `llm:` settings
of a generation run or an llm labeler, an augment run's CODI settings and files (augment_checkpoint, augment_out) and
the LCA files a run reads (lca.rankings, lca.potential); and the combinations a run can never use
(check_combinations): keys that name each other (evaluate / load_step without checkpoint_path, env_args.seed), the
runner and batch_size_run, the actor's output and the learner and action selector that read it, batch_size and
buffer_size, and render / save_replay where the env cannot honour them (check_env_outputs).
"""
import difflib
import os
import sys

from utils.config import ConfigError, epymarl_note


def _registries(config):
    """key -> (registry, null allowed) for the keys of `config` that name a registry entry. The labeler and augmenter
    registries are imported only when the config names one: they import offline/ and h5py, which other runs never
    need."""
    from components.action_selectors import REGISTRY as selectors
    from controllers import REGISTRY as macs
    from learners import REGISTRY as learners
    from modules.agents import REGISTRY as agents
    from modules.critics import REGISTRY as critics
    from modules.mixers import REGISTRY as mixers
    from run import REGISTRY as runs
    from runners import REGISTRY as runners
    from shapers import REGISTRY as shapers

    registries = {"run": (runs, False), "runner": (runners, False), "mac": (macs, False),
                  "learner": (learners, False), "agent": (agents, False), "mixer": (mixers, True),
                  "critic_type": (critics, False), "critic_agent": (agents, False), "shaper": (shapers, False),
                  "action_selector": (selectors, False)}
    if "labeler" in config:
        from labeling import LABELERS

        registries["labeler"] = (LABELERS, False)
    if "augmenter" in config:
        from augmenters import REGISTRY as augmenters

        registries["augmenter"] = (augmenters, False)
    return {key: value for key, value in registries.items() if key in config}


def check_name(key, value, registry, nullable=False):
    if (value is None and nullable) or value in registry:
        return
    note = epymarl_note(value, f"{key}={value}") if isinstance(value, str) else None
    if note:
        raise ConfigError(note)
    valid = sorted(registry)
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"config key {key} names no {key.replace('_', ' ')}: {value!r}; valid: {', '.join(valid)}"
                      + (" or null" if nullable else "") + hint)


def _learner_run(config):
    """The run mode that builds `config`'s learner (online, offline, evaluate), or None for the others."""
    from run.setup import LEARNER_RUNS

    run = "evaluate" if config.get("evaluate") else config.get("run", "online")
    return run if run in LEARNER_RUNS else None


def has_display(environ=None):
    """Whether a window can open here: on Linux an X display must be named in DISPLAY (a headless machine or an ssh
    session without X forwarding has none). WAYLAND_DISPLAY alone is not enough: LBF's pyglet opens X11 windows
    only, and one rule serves every window renderer, since a Wayland desktop runs XWayland, which sets DISPLAY. Other
    systems always have a display."""
    environ = os.environ if environ is None else environ
    return not sys.platform.startswith("linux") or bool(environ.get("DISPLAY"))


def check_env_outputs(config, evaluating, display=None):
    """render=True / save_replay=True where they would do nothing or fail: the env's class declares what its
    render() and save_replay() do (envs.multiagentenv.MultiAgentEnv.RENDERS, SAVES_REPLAYS). `display`: whether
    a window can open (has_display() when None)."""
    from envs import env_class
    from envs.multiagentenv import MultiAgentEnv

    if not (config.get("render") or config.get("save_replay")):
        return
    try:
        cls = env_class(config["env"])
    except ImportError:  # an optional package that is missing: the run reports it
        return
    if not (isinstance(cls, type) and issubclass(cls, MultiAgentEnv)):
        return
    env_args = dict(config.get("env_args") or {})
    env = f"env {config['env']}" + (f" ({env_args['key']})" if env_args.get("key") else "")
    if config.get("render"):
        how = cls.renders(env_args)
        if how is None:
            raise ConfigError(f"render=True: {env} draws nothing (its render() shows no episode); leave render out")
        if how == "window" and not (has_display() if display is None else display):
            raise ConfigError(f"render=True: {env} draws in a window, and there is no display here (DISPLAY is not "
                              f"set: a headless machine, or ssh without X forwarding); leave render out, or run "
                              f"where a display is")
    if config.get("save_replay"):
        if not evaluating:
            raise ConfigError("save_replay=True saves a replay after an evaluation only: add evaluate=True "
                              "checkpoint_path=results/models/<run>, or leave save_replay out")
        if not cls.SAVES_REPLAYS:
            raise ConfigError(f"save_replay=True: {env} writes no replays (its save_replay() does nothing); leave "
                              f"save_replay out")


def check_expert_spec(spec):
    """offline_expert=top:<name>:<K> / label:<name>: the form is checked here (K an integer >= 1, a name given); the
    label itself, and K against the episodes, when the dataset loads (offline.sampling.select_expert)."""
    if not isinstance(spec, str) or not spec:  # unset (the default): nothing to check, and offline/ (h5py) not imported
        return
    from offline.sampling import LABEL_PREFIX, TOP_PREFIX, parse_top

    if spec.startswith(TOP_PREFIX):
        try:
            parse_top(spec)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    elif spec.startswith(LABEL_PREFIX) and not spec[len(LABEL_PREFIX):]:
        raise ConfigError(f"offline_expert={spec}: expected 'label:<label name>', e.g. label:<set>_expert (O-MAPL's "
                          f"top K)")


def check_combinations(config):
    """Raise ConfigError for settings that are valid one by one but that the run cannot use together (module doc)."""
    from components.action_selectors import REGISTRY as selectors
    from learners import REGISTRY as learners

    name = config.get("name")
    evaluating = bool(config.get("evaluate")) or config.get("run") == "evaluate"
    check_env_outputs(config, evaluating)
    if evaluating and not config.get("checkpoint_path"):
        raise ConfigError("evaluate=True (or run=evaluate) needs a trained model: give "
                          "checkpoint_path=results/models/<run> (evaluation never trains)")
    if config.get("load_step") and not config.get("checkpoint_path"):
        raise ConfigError(f"load_step={config['load_step']} picks a checkpoint of checkpoint_path, which is not given: "
                          f"add checkpoint_path=results/models/<run>, or leave load_step out to train from scratch")
    if "seed" in (config.get("env_args") or {}):
        raise ConfigError(f"env_args.seed={config['env_args']['seed']!r} is set by the run from seed= (parallel env i "
                          f"gets seed + i): use seed=<integer> instead of env_args.seed")
    if config.get("runner") == "episode" and config.get("batch_size_run", 1) != 1:
        raise ConfigError(f"batch_size_run={config['batch_size_run']}: runner=episode plays one env at a time; use "
                          f"runner=parallel to step {config['batch_size_run']} envs together, or batch_size_run=1")
    check_expert_spec(config.get("offline_expert"))
    run = _learner_run(config)
    learner_class = learners.get(config.get("learner"))
    output = config.get("agent_output_type")
    if run is None or learner_class is None:
        return
    needed = getattr(learner_class, "agent_output_type", None)
    if needed is not None and output != needed:
        what = "action values (Q)" if needed == "q" else "a policy (logits, softmax over available actions)"
        raise ConfigError(f"agent_output_type={output}: {name} (learner: {config['learner']}) trains {what}, so its "
                          f"agents must output agent_output_type={needed}; leave agent_output_type out to keep "
                          f"--config={name}'s")
    selector = selectors.get(config.get("action_selector"))
    wants = getattr(selector, "agent_output_type", None)
    if wants is not None and output != wants:
        fits = sorted(k for k, v in selectors.items() if getattr(v, "agent_output_type", None) == output)
        raise ConfigError(f"action_selector={config['action_selector']} acts on agent_output_type={wants} outputs, but "
                          f"{name}'s agents output {output}: use action_selector={' or '.join(fits)}")
    if run == "online" and learner_class.uses_replay_buffer and config.get("batch_size", 0) > config.get(
            "buffer_size", 0):
        how = ("trains on the latest batch_size episodes" if learner_class.on_policy
               else "samples batch_size episodes")
        raise ConfigError(f"batch_size={config['batch_size']} > buffer_size={config['buffer_size']}: {name} "
                          f"(learner: {config['learner']}) {how} from a replay buffer of buffer_size episodes, so it "
                          f"would never train; use buffer_size >= {config['batch_size']} or batch_size <= "
                          f"{config['buffer_size']}")


def check_config(config, files=True):
    """Raise ConfigError for the first thing in `config` that the run would fail on while building (see module doc).
    files=False leaves out the checks of the files the config names (augment_checkpoint, augment_out, lca.rankings,
    lca.potential): a sweep validates its trials before any starts, when an earlier trial's output may not exist yet;
    each trial's own start (src/main.py) checks them."""
    from envs import check_env_args

    for key, (registry, nullable) in _registries(config).items():
        check_name(key, config[key], registry, nullable)
    from run.setup import check_reward_settings

    check_combinations(config)
    check_reward_settings(config)  # per-agent rewards (common_reward=False, a per-agent shaper) need a learner for them
    check_env_args(config["env"], dict(config.get("env_args") or {}))
    from llm.config import check_cost_budget, check_secrets, resolve

    check_secrets(config.get("llm"))  # every run records its llm: block: never a key in it (LLMConfigError)
    if config.get("run") == "qllm_generate" or config.get("labeler") == "llm":
        # LLMConfigError is a ConfigError; an llm labeler's run names its model when it starts (a sweep file, e.g.
        # config/sweeps/lca_openai.yaml, leaves llm.model to the command that launches it)
        resolved = resolve(config.get("llm"), require_model=config.get("run") == "qllm_generate")
        if config.get("labeler") == "llm":
            check_cost_budget(resolved, config.get("max_cost_usd"))
    if config.get("run") == "augment":  # CODI's settings, all checked before any stage starts
        from types import SimpleNamespace

        from augmenters.codi.augmenter import check_files as check_augment_files
        from augmenters.codi.settings import resolve as resolve_augment

        try:
            resolve_augment(SimpleNamespace(**config))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if files:  # augment_checkpoint is a trained artifact folder, augment_out not the source
            check_augment_files(config)
    if files and (config.get("run") == "shape" or config.get("shaper") == "lca"):
        from shapers.lca.train import check_files as check_lca_files

        check_lca_files(config)  # lca.rankings / lca.potential exist and are of this env
