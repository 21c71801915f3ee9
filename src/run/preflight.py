"""Checks of a merged config that need the registries, run by src/main.py before the Sacred run starts, so that a
mistake is reported before anything is written (no run folder, no TensorBoard folder) and before any work.

`check_config(config)` raises ConfigError naming the key, the value, the valid values and the closest one: the run
mode, the component names (runner, mac, learner, agent, mixer, critic, shaper, action selector), the env and its
arguments (envs.check_env_args: unknown arguments, gymma ids), the labeler and augmenter names, the `llm:` settings
of a generation run or an llm labeler, and an augment run's CODI settings; and the combinations a run can never use
(check_combinations): keys that name each other (evaluate / load_step without checkpoint_path, env_args.seed), the
runner and batch_size_run, the actor's output and the learner and action selector that read it, batch_size and
buffer_size.
"""
import difflib

from utils.config import ConfigError


def _registries():
    from augmenters import REGISTRY as augmenters
    from components.action_selectors import REGISTRY as selectors
    from controllers import REGISTRY as macs
    from labeling import LABELERS as labelers
    from learners import REGISTRY as learners
    from modules.agents import REGISTRY as agents
    from modules.critics import REGISTRY as critics
    from modules.mixers import REGISTRY as mixers
    from run import REGISTRY as runs
    from runners import REGISTRY as runners
    from shapers import REGISTRY as shapers

    # key -> (registry, null allowed)
    return {"run": (runs, False), "runner": (runners, False), "mac": (macs, False), "learner": (learners, False),
            "agent": (agents, False), "mixer": (mixers, True), "critic_type": (critics, False),
            "critic_agent": (agents, False), "shaper": (shapers, False), "action_selector": (selectors, False),
            "labeler": (labelers, False), "augmenter": (augmenters, False)}


def check_name(key, value, registry, nullable=False):
    if (value is None and nullable) or value in registry:
        return
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


def check_combinations(config):
    """Raise ConfigError for settings that are valid one by one but that the run cannot use together (module doc)."""
    from components.action_selectors import REGISTRY as selectors
    from learners import REGISTRY as learners

    name = config.get("name")
    evaluating = bool(config.get("evaluate")) or config.get("run") == "evaluate"
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


def check_config(config):
    """Raise ConfigError for the first thing in `config` that the run would fail on while building (see module doc)."""
    from envs import check_env_args

    for key, (registry, nullable) in _registries().items():
        if key in config:
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

        from augmenters.codi.settings import resolve as resolve_augment

        try:
            resolve_augment(SimpleNamespace(**config))
        except ValueError as e:
            raise ConfigError(str(e)) from None
