"""Checks of a merged config that need the registries, run by src/main.py before the Sacred run starts, so that a
mistake is reported before anything is written (no run folder, no TensorBoard folder) and before any work.

`check_config(config)` raises ConfigError naming the key, the value, the valid values and the closest one: the run
mode, the component names (runner, mac, learner, agent, mixer, critic, shaper, action selector), the env and its
arguments (envs.check_env_args: unknown arguments, gymma ids), the labeler and augmenter names, the `llm:` settings
of a generation run or an llm labeler, and an augment run's CODI settings.
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


def check_config(config):
    """Raise ConfigError for the first thing in `config` that the run would fail on while building (see module doc)."""
    from envs import check_env_args

    for key, (registry, nullable) in _registries().items():
        if key in config:
            check_name(key, config[key], registry, nullable)
    from run.setup import check_reward_settings

    check_reward_settings(config)  # per-agent rewards (common_reward=False, a per-agent shaper) need a learner for them
    check_env_args(config["env"], dict(config.get("env_args") or {}))
    if config.get("run") == "qllm_generate" or config.get("labeler") == "llm":
        from llm.config import resolve

        # LLMConfigError is a ConfigError; an llm labeler's run names its model when it starts (a sweep file, e.g.
        # config/sweeps/lca_openai.yaml, leaves llm.model to the command that launches it)
        resolve(config.get("llm"), require_model=config.get("run") == "qllm_generate")
    if config.get("run") == "augment":  # CODI's settings, all checked before any stage starts
        from types import SimpleNamespace

        from augmenters.codi.settings import resolve as resolve_augment

        try:
            resolve_augment(SimpleNamespace(**config))
        except ValueError as e:
            raise ConfigError(str(e)) from None
