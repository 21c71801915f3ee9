"""LCA's state pairs and key steps (issue 16 §3; the paper's §4.1): what the `lca_state_pair` task asks about.

Pairs. A transition (s, a, s') comes from `lca.pair_source`:
  random_states  env.sample_state(rng) (a random reachable state) -> env.set_state -> one random AVAILABLE joint
                 action (each agent uniform over its available actions) -> step -> (s, a, s'); the predecessor's way;
  rollouts       episodes of a uniform random policy over the available actions (env.reset seeded by lca.pair_seed;
                 a new episode after a terminal or the time limit); `lca.rollout_checkpoint` (a trained policy) is
                 not supported yet and is refused by name;
  mixed          alternating: even transitions from random_states, odd ones from rollouts (two seeded streams);
  auto           random_states where the env has sample_state, else rollouts (Pistonball has no sample_state).
An item is (transition, agent i), made only for agents that acted (a_i != env.stay_action: staying still gets reward
0 in LCA, so it is never asked) and only once per (s, a, s', i) (exact bytes of the state vectors). Counts: lca.n_pairs
items in total, or when null the paper's: Two-Switch 4400 in total (one shared potential), Victim-Rubble 2000 per
agent (sampling continues until each agent has its 2000; items of a full agent are skipped), Pistonball 1000 in
total. Everything is seeded by lca.pair_seed: the same seed gives the same items with the same ids
"pair:<transition:05d>:a<i>" (transitions numbered in the order they first gave an item). Sampling gives up with a
clear error after 50x the wanted items in transitions (too few distinct ones). The oracle (env.pair_oracle:
better | worse | equal) of every item is computed here: it is stored for accuracy and used as the answer only by the
oracle rankers.

Coverage: for an env whose state has a `ball_x` field (Pistonball) the pair set reports how the ball's x of s is spread
over 10 equal bins of [0, 1] (counts, share of bins visited, min, max): rollouts of a random policy rarely carry the
ball far, so low coverage explains weak potentials away from the start.

Key steps (§4.1). Random episodes (at most KEYSTEP_EPISODES, each of at most lca.keystep_max_steps steps) are played
in an env built with no time limit that ends earlier and no step penalty where its env_args have them
(episode_limit / max_cycles = the cap, step_penalty none, time_penalty 0, individual_reward off, Pistonball's reward
sparse so it fires only at the wall). The first episode that ends in a terminal gives the key steps: every step where
the team reward fired, in order, with the counters of the step info that rose (e.g. switches_triggered 0 -> 1) and
the labelled lines ("Switch1: ...", "Agent 0 (...): at ...": those with a colon) of env.describe_state that changed
since the previous key step; drawings such as the grid's map rows are left out (partial map rows read badly; the
start state is shown in full in the prompt as the map). `lca.keystep_policy=oracle` plays env.oracle_actions()
instead of random actions; `lca.keysteps_file` gives the text directly. No episode finishing is an error naming the
cap and both alternatives.
"""
import hashlib
from dataclasses import dataclass, field

import numpy as np

from envs.multiagentenv import MultiAgentEnv
from utils.config import ConfigError

PAIR_SOURCES = ("random_states", "rollouts", "mixed", "auto")
PAPER_COUNTS = {"two_switch": ("total", 4400), "victim_rubble": ("per_agent", 2000), "pistonball": ("total", 1000)}
ORACLE_ANSWERS = ("better", "worse", "equal")
MAX_TRANSITIONS_PER_ITEM = 50
KEYSTEP_EPISODES = 3
COVERAGE_BINS = 10


def require(env, names, why):
    """ConfigError naming the first of `names` (methods or attributes) the env lacks, and what needs it: absent,
    None (stay_action), or the base class's stub that raises MissingEnvHook."""
    for name in names:
        value = getattr(env, name, None)
        stub = getattr(MultiAgentEnv, name, None)
        if value is None or (callable(stub) and getattr(type(env), name, None) is stub):
            raise ConfigError(f"env {type(env).__name__} has no {name}, which {why} needs; LCA needs an env with "
                              f"stay_action, agent_roles(), obs_schema(), pair_oracle(), describe_agent_view() and "
                              f"task_dependencies() (Two-Switch, Victim-Rubble and Pistonball have them)")


def resolve_pair_source(value, env):
    if value not in PAIR_SOURCES:
        raise ConfigError(f"lca.pair_source must be one of {list(PAIR_SOURCES)}, got {value!r}")
    if value == "auto":
        return "random_states" if callable(getattr(env, "sample_state", None)) else "rollouts"
    if value in ("random_states", "mixed"):
        require(env, ("sample_state", "set_state"), f"lca.pair_source={value}")
    return value


def pair_target(n_pairs, env_name):
    """("total" | "per_agent", count): lca.n_pairs items in total, or the paper's count for the env."""
    if n_pairs is None:
        if env_name not in PAPER_COUNTS:
            raise ConfigError(f"lca.n_pairs is null, which means the paper's count, but the paper has none for env "
                              f"{env_name!r} (only {sorted(PAPER_COUNTS)}); set lca.n_pairs=<items>")
        return PAPER_COUNTS[env_name]
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise ConfigError(f"lca.n_pairs must be a whole number of (pair, agent) items >= 1 or null, got {n_pairs!r}")
    return "total", int(n_pairs)


@dataclass
class PairSet:
    """Transitions [T, ...] and the items made of them: `items` [(transition, agent)] in id order, `oracle` [P] the
    env's pair_oracle of each item (better | worse | equal), `info` what sampling reports (JSON-able)."""
    state: np.ndarray  # [T, S] float32
    next_state: np.ndarray  # [T, S]
    actions: np.ndarray  # [T, n] int64
    obs: np.ndarray  # [T, n, O] float32
    next_obs: np.ndarray  # [T, n, O]
    items: list
    oracle: list
    info: dict = field(default_factory=dict)

    def item_id(self, k):
        t, i = self.items[k]
        return f"pair:{t:05d}:a{i}"


def random_actions(env, rng):
    """One available action per agent, uniform over each agent's available actions."""
    out = []
    for i in range(env.n_agents):
        avail = np.flatnonzero(np.asarray(env.get_avail_agent_actions(i)))
        out.append(int(rng.choice(avail)))
    return out


def _step(env, actions):
    """(s, a, s', obs, obs', reward, terminated, info) of one step from the env's current state."""
    s, obs = np.asarray(env.get_state(), dtype=np.float32), np.stack(env.get_obs()).astype(np.float32)
    reward, terminated, info = env.step(actions)
    s2, obs2 = np.asarray(env.get_state(), dtype=np.float32), np.stack(env.get_obs()).astype(np.float32)
    return s, np.asarray(actions, dtype=np.int64), s2, obs, obs2, reward, terminated, info


def _random_state_stream(env, rng):
    while True:
        env.set_state(env.sample_state(rng))
        yield _step(env, random_actions(env, rng))[:5]


def _rollout_stream(env, rng, seed, restore):
    """Random-policy episodes; `restore`: put the episode's state back before each step (mixed: the random-state
    stream moves the same env in between)."""
    env.seed(int(seed))
    env.reset()
    current = env.get_state()
    while True:
        if restore:
            env.set_state(current)
        s, a, s2, obs, obs2, _, terminated, info = _step(env, random_actions(env, rng))
        yield s, a, s2, obs, obs2
        if terminated or info.get("episode_limit"):
            env.reset()
        current = env.get_state()


def sample_pairs(env, env_name, pair_source, n_pairs, pair_seed, rollout_checkpoint=""):
    """The PairSet of these settings (see the module docstring); `pair_source` resolved (not auto)."""
    require(env, ("stay_action", "pair_oracle"), "LCA's pair sampling")
    if rollout_checkpoint and pair_source in ("rollouts", "mixed"):
        raise ConfigError(f"lca.rollout_checkpoint={rollout_checkpoint!r}: rollouts of a trained policy are not "
                          f"supported yet; leave it empty (a uniform random policy plays) or use "
                          f"lca.pair_source=random_states")
    mode, count = pair_target(n_pairs, env_name)
    n = env.n_agents
    stay = int(env.stay_action)
    rng = np.random.default_rng([int(pair_seed), 0])
    rollouts = _rollout_stream(env, np.random.default_rng([int(pair_seed), 1]), pair_seed, pair_source == "mixed")
    sources = {"random_states": [_random_state_stream(env, rng)], "rollouts": [rollouts],
               "mixed": [_random_state_stream(env, rng), rollouts]}[pair_source]
    wanted = count * n if mode == "per_agent" else count
    per_agent = np.zeros(n, dtype=np.int64)
    seen, kept, items, oracle = set(), [], [], []
    stats = {"transitions": 0, "stay": 0, "duplicates": 0, "agent_full": 0}
    while len(items) < wanted:
        if stats["transitions"] >= MAX_TRANSITIONS_PER_ITEM * wanted + 1000:
            raise ValueError(f"lca pairs: only {len(items)} distinct (pair, agent) items after {stats['transitions']} "
                             f"transitions from {pair_source} (wanted {wanted}); lower lca.n_pairs or use another "
                             f"lca.pair_source")
        s, a, s2, obs, obs2 = next(sources[stats["transitions"] % len(sources)])
        stats["transitions"] += 1
        new = []
        for i in range(n):
            if a[i] == stay:
                stats["stay"] += 1
                continue
            if mode == "per_agent" and per_agent[i] >= count:
                stats["agent_full"] += 1
                continue
            key = hashlib.blake2b(b"".join((s.tobytes(), a.tobytes(), s2.tobytes(), bytes([i]))),
                                  digest_size=16).digest()
            if key in seen:
                stats["duplicates"] += 1
                continue
            seen.add(key)
            new.append(i)
        new = new[:wanted - len(items)]
        if not new:
            continue
        t = len(kept)
        kept.append((s, a, s2, obs, obs2))
        for i in new:
            answer = env.pair_oracle(s, a, s2, i)
            if answer not in ORACLE_ANSWERS:
                raise ValueError(f"{type(env).__name__}.pair_oracle returned {answer!r}; expected one of "
                                 f"{list(ORACLE_ANSWERS)}")
            items.append((t, i))
            oracle.append(answer)
            per_agent[i] += 1
    state, action, next_state, obs, next_obs = (np.stack(x) for x in zip(*kept))
    info = {"pair_source": pair_source, "target": {"mode": mode, "count": count}, "items": len(items),
            "items_per_agent": per_agent.tolist(), "kept_transitions": len(kept), **stats,
            "oracle_counts": {k: oracle.count(k) for k in ORACLE_ANSWERS}}
    coverage = ball_coverage(env, state)
    if coverage is not None:
        info["coverage"] = coverage
    return PairSet(state, next_state, action, obs, next_obs, items, oracle, info)


def ball_coverage(env, states):
    """How the `ball_x` state field of `states` [T, S] spreads over COVERAGE_BINS bins of [0, 1], or None."""
    try:
        fields = {f.name: f for f in env.state_schema()}
    except NotImplementedError:
        return None
    if "ball_x" not in fields:
        return None
    x = states[:, fields["ball_x"].start]
    counts, edges = np.histogram(np.clip(x, 0.0, 1.0), bins=COVERAGE_BINS, range=(0.0, 1.0))
    return {"field": "ball_x", "bin_edges": np.round(edges, 3).tolist(), "counts": counts.tolist(),
            "visited_fraction": float((counts > 0).mean()), "min": float(x.min()), "max": float(x.max())}


# --- key steps ---
def keystep_overrides(env_args, cap):
    """env_args changes for key-step episodes: the cap as the only limit, no step penalty, team reward only."""
    over = {}
    for key, value in (("episode_limit", int(cap)), ("max_cycles", int(cap)), ("step_penalty", "none"),
                       ("time_penalty", 0.0), ("individual_reward", False)):
        if key in env_args:
            over[key] = value
    if env_args.get("reward") == "dense":  # Pistonball: its dense reward fires every step; LCA's team reward is sparse
        over["reward"] = "sparse"
    return over


def _counters(info):
    return {k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("events", "episode_limit")}


def find_keysteps(env, policy, cap, seed):
    """The key-step text from episodes of `env` (built with keystep_overrides); ValueError when none finishes."""
    if policy not in ("random", "oracle"):
        raise ConfigError(f"lca.keystep_policy must be random or oracle, got {policy!r}")
    if policy == "oracle":
        require(env, ("oracle_actions",), "lca.keystep_policy=oracle")
    rng = np.random.default_rng([int(seed), 2])
    env.seed(int(seed))
    for _ in range(KEYSTEP_EPISODES):
        env.reset()
        start = env.describe_state().splitlines()
        events, previous, counters = [], start, {}
        for t in range(int(cap)):
            actions = env.oracle_actions() if policy == "oracle" else random_actions(env, rng)
            reward, terminated, info = env.step(actions)
            now = _counters(info)
            if float(np.sum(reward)) > 0:
                rose = [f"{k} {counters.get(k, 0):g} -> {v:g}" for k, v in now.items() if v > counters.get(k, 0)]
                lines = env.describe_state().splitlines()
                # labelled facts only ("Switch1: ..."): drawing rows (the grid's map) have no colon and are shown once
                changed = [line for line in lines if line not in previous and ":" in line]
                events.append(f"Key step {len(events) + 1} (step {t + 1}, team reward {float(np.sum(reward)):+g}"
                              + (f"; {', '.join(rose)}" if rose else "") + "):\n" + "\n".join(changed))
                previous = lines
            counters = now
            if terminated:
                return "\n\n".join(events) if events else "(the episode ended without a team reward)"
            if info.get("episode_limit"):
                break
    raise ValueError(f"key steps: no {policy} episode of {KEYSTEP_EPISODES} reached the end of the task within "
                     f"lca.keystep_max_steps={cap} steps; raise lca.keystep_max_steps, play the greedy oracle "
                     f"(lca.keystep_policy=oracle), or give the key steps as text (lca.keysteps_file=<file>)")
