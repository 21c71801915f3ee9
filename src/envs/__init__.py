"""Env REGISTRY: `env` in the config -> a factory taking **env_args."""
import difflib

from envs.matrix_game import MatrixGame

REGISTRY = {
    "matrix_game": MatrixGame,
}


def register_gymma():
    # gymnasium is imported only when a gymma env is used
    from envs.gymma import GymmaWrapper
    return GymmaWrapper


LAZY = {"gymma": register_gymma}


def env_from_args(args, **overrides):
    """The env of a run: `env` + `env_args`, plus the reward settings every env accepts."""
    env_args = dict(args.env_args, common_reward=args.common_reward,
                    reward_scalarisation=args.reward_scalarisation)
    env_args.update(overrides)
    return make_env(args.env, **env_args)


def make_env(name, **env_args):
    if name not in REGISTRY and name in LAZY:
        REGISTRY[name] = LAZY[name]()
    if name not in REGISTRY:
        valid = sorted(set(REGISTRY) | set(LAZY))
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown env '{name}'.{hint} Valid envs: {', '.join(valid)}")
    return REGISTRY[name](**env_args)
