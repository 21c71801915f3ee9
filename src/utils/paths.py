"""Where things are: the one place that computes the repository root, and the names runs use in results paths."""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC_DIR = os.path.join(REPO_ROOT, "src")
CONFIG_DIR = os.path.join(REPO_ROOT, "config")
RESULTS_ROOT = os.path.join(REPO_ROOT, "results")


def results_path(config):
    """The run's results folder: `local_results_path`, relative paths taken from the repository root."""
    path = config.get("local_results_path", "results")
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def repo_relative(path):
    """`path` as given if it exists, else relative to the repository root when that exists (like results paths)."""
    path = os.path.expanduser(str(path))
    if not os.path.isabs(path) and not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
        return os.path.join(REPO_ROOT, path)
    return path


def unseeded(env_args):
    """env_args without the seed: what makes two datasets, checkpoints or label sets the same env (the seed only says
    which episodes were drawn)."""
    return {k: v for k, v in (env_args or {}).items() if k != "seed"}


def env_label(config):
    """The task's name in results paths: SMAC map, gym key, matrix game, or scenario (MPE: with its N)."""
    env_args = config.get("env_args", {})
    for k in ("map_name", "key", "game"):
        if env_args.get(k):
            return str(env_args[k]).split(":")[-1]
    if env_args.get("scenario"):
        n = env_args.get("N")
        return f"{env_args['scenario']}_N{n}" if n else str(env_args["scenario"])
    return config["env"]
