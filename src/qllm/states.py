"""Global states from random rollouts of the real env, for validating TFCAFs on inputs they will see.

`sample_states(env_name, env_args, n=512, seed=0) -> float32 [n, S]`: first states of episodes, last
(terminal or time-limit) states, the env's own edge cases when it offers `edge_states()` (e.g. dead
agents, collected food), and a seeded random subsample of every other visited state. Actions are drawn
uniformly from each agent's available actions. Deterministic for a seed.
"""
import numpy as np

from envs import make_env

MAX_EPISODES = 200
MAX_STEPS = 20_000


def sample_states(env_name, env_args, n=512, seed=0):
    return sample_states_and_info(env_name, env_args, n=n, seed=seed)[0]


def sample_states_and_info(env_name, env_args, n=512, seed=0):
    """(states [n, S] float32, {"n_agents", "state_size", "episodes", "steps"})."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    args = dict(env_args or {})
    args["seed"] = seed
    args.setdefault("common_reward", True)
    args.setdefault("reward_scalarisation", "sum")
    env = make_env(env_name, **args)
    try:
        return _collect(env, n, np.random.default_rng(seed))
    finally:
        env.close()


def _collect(env, n, rng):
    n_agents = env.n_agents
    firsts, lasts, middle = [], [], []
    episodes = steps = 0
    # enough visited states to choose from: about 2n, at least a few episodes
    while episodes < MAX_EPISODES and steps < MAX_STEPS and (len(middle) + len(firsts) + len(lasts) < 2 * n
                                                              or episodes < 4):
        env.reset()
        firsts.append(_state(env))
        episodes += 1
        limit = int(getattr(env, "episode_limit", 0) or 1000)
        for t in range(limit):
            avail = np.asarray(env.get_avail_actions())
            actions = [int(rng.choice(np.flatnonzero(avail[i]))) if avail[i].any() else 0 for i in range(n_agents)]
            _, terminated, info = env.step(actions)
            steps += 1
            state = _state(env)
            done = bool(terminated) or bool(info.get("episode_limit", False)) or t == limit - 1
            if done:
                lasts.append(state)
                break
            middle.append(state)
    edge = []
    if callable(getattr(env, "edge_states", None)):
        edge = [np.asarray(s, dtype=np.float32).ravel() for s in env.edge_states()]
    state_size = firsts[0].shape[0]
    # priority: edge cases, then first and last states (a quarter of n each at most), then the rest
    chosen = edge[: n // 4]
    for group in (firsts, lasts):
        take = min(len(group), n // 4)
        chosen += [group[i] for i in sorted(rng.choice(len(group), size=take, replace=False))]
    rest = n - len(chosen)
    pool = middle + [s for g in (firsts, lasts) for s in g]
    if rest > 0:
        idx = rng.choice(len(pool), size=rest, replace=len(pool) < rest)
        chosen += [pool[i] for i in idx]
    states = np.stack(chosen[:n]).astype(np.float32)
    if not np.isfinite(states).all():
        raise ValueError("the env produced a state with NaN or inf")
    info = {"n_agents": n_agents, "state_size": state_size, "episodes": episodes, "steps": steps}
    return states, info


def _state(env):
    return np.asarray(env.get_state(), dtype=np.float32).ravel().copy()
