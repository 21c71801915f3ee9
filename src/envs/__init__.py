"""Env REGISTRY: `env` in the config -> a factory taking **env_args.

Env families with heavy or optional dependencies (gymnasium, mpe2, gfootball, StarCraft II,
jaxmarl) are listed in LAZY as "module:Class" and imported only when used, so a missing
optional package only matters to the runs that need it.

`check_env_args(name, env_args)` checks a config's env and its arguments without building the env (src/main.py
runs it before a run starts): an unknown env or argument is an EnvArgumentError, a ConfigError.
"""
import difflib
import importlib

from envs.matrix_game import MatrixGame
from envs.multiagentenv import EnvArgumentError, MultiAgentEnv, reject_unknown_args, signature_args

REGISTRY = {
    "matrix_game": MatrixGame,
}

LAZY = {
    "gymma": "envs.gymma:GymmaWrapper",
    "lbf": "envs.lbf:ForagingEnv",
    "mpe": "envs.mpe:MPEEnv",
    "pistonball": "envs.pistonball:PistonballEnv",
    "gfootball": "envs.gfootball:FootballEnv",
    "sc2": "envs.smac:SMACEnv",
    "sc2v2": "envs.smac:SMACv2Env",
    "smax": "envs.smax:SMAXEnv",
    "two_switch": "envs.gridworld:TwoSwitchEnv",
    "victim_rubble": "envs.gridworld:VictimRubbleEnv",
}


def _load(name):
    module, _, cls = LAZY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def run_env_args(args, **overrides):
    """The constructor arguments of a run's env: `env_args` plus the reward settings every env accepts
    (MultiAgentEnv.set_reward_settings), then `overrides`."""
    env_args = dict(args.env_args, common_reward=args.common_reward, reward_scalarisation=args.reward_scalarisation)
    env_args.update(overrides)
    return env_args


def env_from_args(args, **overrides):
    """The env of a run: `env` + run_env_args."""
    return make_env(args.env, **run_env_args(args, **overrides))


def env_class(name):
    """The class (or factory) registered as `name`; EnvArgumentError listing the valid names if there is none."""
    if name not in REGISTRY and name in LAZY:
        REGISTRY[name] = _load(name)
    if name not in REGISTRY:
        valid = sorted(set(REGISTRY) | set(LAZY))
        close = difflib.get_close_matches(str(name), valid, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise EnvArgumentError(f"unknown env '{name}'.{hint} Valid envs: {', '.join(valid)}")
    return REGISTRY[name]


def check_env_args(name, env_args):
    """Raise EnvArgumentError (a ConfigError) for an unknown env `name` or an argument in `env_args` it does not
    take ("unknown env argument 'time_limt' for gymma; valid: ...; did you mean 'time_limit'?"), or for a gymma
    key that names no env; builds nothing. An env whose optional package is missing is left to the run to report."""
    try:
        cls = env_class(name)
    except ImportError:
        return
    if isinstance(cls, type) and issubclass(cls, MultiAgentEnv):
        cls.check_args(name, env_args)
        return
    try:
        valid = signature_args(cls)
    except (TypeError, ValueError):
        return
    if valid is not None:
        reject_unknown_args(name, env_args, valid)


def env_config_notes(name, env_args):
    """Warnings for a run of env `name` with `env_args` (MultiAgentEnv.config_notes); none for an env whose package
    is missing or that is not a MultiAgentEnv."""
    try:
        cls = env_class(name)
    except ImportError:
        return []
    if isinstance(cls, type) and issubclass(cls, MultiAgentEnv):
        return cls.config_notes(env_args)
    return []


def make_env(name, **env_args):
    return env_class(name)(**env_args)
