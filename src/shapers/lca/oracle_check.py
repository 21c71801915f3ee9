"""How a trained potential rewards the env's own oracle policy: F_i = sigma(o'_i) - sigma(o_i) along greedy oracle
episodes, against the pair oracle's verdict on each of those moves (the paper's Fig. 6 reads F along an episode).

    oracle_episode_check(potential, env, episodes=20, seed=0) -> {"sign_agreement", "judged", "by_group",
                                                                 "by_subgoal", ...} | None (env without the hooks)

Held-out agreement on the ranked pairs measures the fit where the pairs were sampled (random reachable states);
this measures it where a policy that solves the task goes. On Victim-Rubble at the paper's 2000 pairs per agent the
first was 0.87 and this 0.70, and the remover's walk to the last rubble got the right sign on under half of its
moves: a potential can look fine on its pairs and still mislead the last stretch of the task.

Decisions:
- A move is an agent's step that is not the stay action (its F is zeroed by the shaper); moves the oracle calls
  "equal" are left out of the agreement, as in training's oracle agreement. F = 0 counts as disagreeing.
- Episodes start from env.reset() after env.seed(seed + episode); the grid oracle's tie-breaking draws from a
  generator seeded the same way, so the check is reproducible.
- Sub-goals (by_subgoal) come from the env's `subgoal(agent, state)` where it has one (grid worlds), keyed
  "<group>: <sub-goal>".
"""
import inspect

import numpy as np

from envs.multiagentenv import MissingEnvHook


def oracle_actions(env, rng):
    if "rng" in inspect.signature(env.oracle_actions).parameters:  # the grid oracle breaks ties at random
        return env.oracle_actions(rng=rng)
    return env.oracle_actions()


def oracle_episode_check(potential, env, episodes=20, seed=0):
    """Per-move sign agreement of F with env.pair_oracle along `episodes` oracle episodes (module docstring), or None
    when the env has no oracle_actions / pair_oracle."""
    spec = potential.meta["encoder"]
    group_of = [spec["groups"][g] for g in spec["agent_groups"]]
    stay = getattr(env, "stay_action", None)
    tally = {}  # key -> [right, judged, sum of F over moves, moves]

    def add(key, right, judged, f):
        t = tally.setdefault(key, [0, 0, 0.0, 0])
        t[0] += right
        t[1] += judged
        t[2] += f
        t[3] += 1

    steps = successes = 0
    for episode in range(int(episodes)):
        env.seed(seed + episode)
        env.reset()
        rng = np.random.default_rng(seed + episode)
        for _ in range(env.episode_limit):
            state, obs = env.get_state(), np.stack(env.get_obs())
            try:
                actions = np.asarray(oracle_actions(env, rng))
            except MissingEnvHook:
                return None
            reward, terminated, info = env.step(actions)
            next_state, next_obs = env.get_state(), np.stack(env.get_obs())
            phi = potential.scores(np.stack([obs, next_obs])).numpy()
            shaped = phi[1] - phi[0]
            steps += 1
            for i, action in enumerate(actions):
                if stay is not None and int(action) == stay:
                    continue
                try:
                    verdict = env.pair_oracle(state, actions, next_state, i)
                except MissingEnvHook:
                    return None
                judged = verdict != "equal"
                right = judged and bool(shaped[i] > 0) == (verdict == "better")
                keys = ["all", f"group:{group_of[i]}"]
                if hasattr(env, "subgoal"):
                    keys.append(f"subgoal:{group_of[i]}: {env.subgoal(i, state).name}")
                for key in keys:
                    add(key, right, judged, float(shaped[i]))
            if terminated:
                successes += bool(info.get("success", True))
                break

    def summary(t):
        right, judged, total, moves = t
        return {"sign_agreement": right / judged if judged else None, "judged": judged, "moves": moves,
                "mean_F": total / moves if moves else None}

    out = {"episodes": int(episodes), "seed": int(seed), "steps": steps, "oracle_success_rate": successes / episodes,
           **summary(tally.get("all", [0, 0, 0.0, 0])), "by_group": {}, "by_subgoal": {}}
    for key, t in sorted(tally.items()):
        kind, _, name = key.partition(":")
        if kind in ("group", "subgoal"):
            out[f"by_{kind}"][name] = summary(t)
    return out


def describe(check):
    """One log line: overall and per-group agreement, and the worst sub-goal."""
    if check is None:
        return "oracle episodes: not checked (the env has no oracle_actions / pair_oracle)"
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    groups = ", ".join(f"{g} {fmt(s['sign_agreement'])}" for g, s in check["by_group"].items())
    text = (f"oracle episodes ({check['episodes']}, oracle success {check['oracle_success_rate']:.2f}): F has the "
            f"pair oracle's sign on {fmt(check['sign_agreement'])} of {check['judged']} judged moves ({groups})")
    judged = [(s["sign_agreement"], name) for name, s in check["by_subgoal"].items() if s["judged"]]
    if judged:
        worst = min(judged)
        text += f"; lowest sub-goal: {worst[1]} {fmt(worst[0])}"
    return text
