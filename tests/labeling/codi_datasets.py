"""A tiny CODI-style one-expert MPE spread dataset for the agent_quality tests: in every episode one agent (the
expert, cycling over the agents) heads for its nearest landmark and the others act uniformly at random. Rolled out
in the real env and written through the real DatasetWriter, with the env_args of config/envs/mpe_spread.yaml and a
short episode limit."""
import numpy as np

from envs import make_env
from envs.mpe import _direction_action
from offline import DatasetWriter
from utils.config import build_config

LIMIT = 10  # steps per episode (env_args.max_cycles)


def spread_env_args(N=3):
    """The env_args a run of --env-config=mpe_spread with env_args.max_cycles=LIMIT has (seed excluded)."""
    args = build_config("label_agent_quality", "mpe_spread", {"env_args": {"max_cycles": LIMIT, "N": N}})["env_args"]
    return {k: v for k, v in args.items() if k != "seed"}


def expert_action(obs_i, n):
    """Towards the nearest landmark (from the agent's own observation: landmarks_rel)."""
    rel = obs_i[4:4 + 2 * n].reshape(n, 2)
    return _direction_action(rel[np.argmin(np.square(rel).sum(1))], dead_zone=0.05)


def write_one_expert_spread(path, E=6, N=3, seed=0, qualities=None):
    """E episodes; agent e % N is the expert of episode e. `qualities` [E, N] names replace the ground truth
    (e.g. to build data that is not one-expert). Returns (path, experts [E])."""
    env = make_env("mpe", **spread_env_args(N), seed=seed)
    rng = np.random.default_rng(seed)
    T1 = LIMIT + 1
    info = env.get_env_info()
    arrays = {"obs": np.zeros((E, T1, N, info["obs_shape"]), np.float32),
              "state": np.zeros((E, T1, info["state_shape"]), np.float32),
              "actions": np.zeros((E, T1, N, 1), np.int64), "avail_actions": np.ones((E, T1, N, 5), np.uint8),
              "reward": np.zeros((E, T1, 1), np.float32), "terminated": np.zeros((E, T1, 1), np.uint8),
              "filled": np.ones((E, T1, 1), np.uint8)}
    experts = np.arange(E) % N
    for e in range(E):
        env.reset()
        for t in range(LIMIT):
            obs = np.asarray(env.get_obs())
            acts = rng.integers(0, 5, N)
            acts[experts[e]] = expert_action(obs[experts[e]], N)
            arrays["obs"][e, t], arrays["state"][e, t], arrays["actions"][e, t, :, 0] = obs, env.get_state(), acts
            arrays["reward"][e, t, 0], _, _ = env.step(acts)
        arrays["obs"][e, LIMIT], arrays["state"][e, LIMIT] = env.get_obs(), env.get_state()
    if qualities is None:
        qualities = np.where(np.arange(N)[None] == experts[:, None], "expert", "random")
    with DatasetWriter(path, info, "mpe", spread_env_args(N), {"env": "mpe"}) as w:
        w.add_arrays(arrays, qualities=qualities)
    env.close()
    return str(path), experts
