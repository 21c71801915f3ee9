"""Random-action speed of every env config, as the runner drives an env.

    python bench/env_speed.py                    # every config in config/envs, 3 repeats
    python bench/env_speed.py lbf mpe_spread --seconds 5

Per step it does what a rollout does: get_avail_actions, step, get_obs, get_state. One
process, one env, no learner. Configs whose env cannot be built here (StarCraft II, a missing
extra) are listed with the reason instead of a number. Writes results/bench/env_speed.{json,md}.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from envs import make_env  # noqa: E402
from report import write_report  # noqa: E402
from utils.config import available, load_yaml  # noqa: E402


def steps_per_second(env, seconds, rng):
    """Steps/s over about `seconds` of whole episodes (resets included)."""
    steps, episodes, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.reset()
        episodes += 1
        while True:
            avail = env.get_avail_actions()
            actions = [int(rng.choice(np.flatnonzero(a))) for a in avail]
            _, terminated, info = env.step(actions)
            env.get_obs()
            env.get_state()
            steps += 1
            if terminated or info.get("episode_limit"):
                break
    return steps / (time.perf_counter() - start), steps / episodes


def bench(name, seconds, repeats):
    cfg = load_yaml("envs", name)
    start = time.perf_counter()
    try:
        env = make_env(cfg["env"], **cfg["env_args"], seed=0)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        return {"config": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    steps_per_episode = steps_per_second(env, min(seconds, 2.0), rng)[1]  # warm-up (JIT, caches)
    rates = [steps_per_second(env, seconds, rng)[0] for _ in range(repeats)]
    info = env.get_env_info()
    env.close()
    return {"config": name, "env": cfg["env"], "n_agents": info["n_agents"], "obs": info["obs_shape"],
            "state": info["state_shape"], "actions": info["n_actions"], "episode_limit": info["episode_limit"],
            "mean_episode_steps": round(steps_per_episode, 1), "build_s": round(build_s, 2),
            "steps_per_s": round(statistics.median(rates)), "runs": [round(r) for r in rates]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="env config names (default: all)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    args = parser.parse_args()
    rows = []
    for name in args.configs or available("envs"):
        rows.append(bench(name, args.seconds, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| config | agents | obs | state | actions | limit | mean ep. steps | steps/s |", "|---" * 8 + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | not built here: {r['error'][:90]}... |||||||")
        else:
            lines.append(f"| {r['config']} | {r['n_agents']} | {r['obs']} | {r['state']} | {r['actions']} | "
                         f"{r['episode_limit']} | {r['mean_episode_steps']} | {r['steps_per_s']:,} |")
    write_report(args.out, "env_speed", rows, lines)


if __name__ == "__main__":
    main()
