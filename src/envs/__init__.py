"""Env REGISTRY: `env` in the config -> a factory taking **env_args.

Env families with heavy or optional dependencies (gymnasium, mpe2, gfootball, StarCraft II,
jaxmarl) are listed in LAZY as "module:Class" and imported only when used, so a missing
optional package only matters to the runs that need it.
"""
import difflib
import importlib

from envs.matrix_game import MatrixGame

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


def make_env(name, **env_args):
    if name not in REGISTRY and name in LAZY:
        REGISTRY[name] = _load(name)
    if name not in REGISTRY:
        valid = sorted(set(REGISTRY) | set(LAZY))
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown env '{name}'.{hint} Valid envs: {', '.join(valid)}")
    return REGISTRY[name](**env_args)
