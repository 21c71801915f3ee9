"""LCA's state pairs and key steps (issue 16 §3; the paper's §4.1): what the `lca_state_pair` task asks about.

Pairs. A transition (s, a, s') comes from `lca.pair_source`:
  random_states  env.sample_state(rng) (a random reachable state) -> env.set_state -> one random AVAILABLE joint
                 action (each agent uniform over its available actions) -> step -> (s, a, s'); the predecessor's way;
  rollouts       episodes of a uniform random policy over the available actions (env.reset seeded by lca.pair_seed;
                 a new episode after a terminal or the time limit), or with `lca.rollout_checkpoint` episodes of a
                 trained policy (see below);
  mixed          alternating: even transitions from random_states, odd ones from rollouts (two seeded streams);
  auto           random_states where the env has sample_state, else rollouts (Pistonball has no sample_state).
A checkpoint with pair_source random_states (or auto resolving to it) is refused: it would not be used.

Trained-policy rollouts (`lca.rollout_checkpoint`): a model folder, results/models/<run>/<t_env>/ or the run folder
meaning its latest step (utils.checkpoint.locate_checkpoint, as checkpoint_path), relative to the repository like
other paths; its run's saved config.json must be for the same env and env_args (seed aside), else an error names
both. The policy is rebuilt as dataset collection does (controllers.behaviour_mac.load_policy) and plays episodes in
its own episode runner (offline.collection.make_runner / play; env seeded by lca.pair_seed) ACTING STOCHASTICALLY: its
own action selector in train mode at the checkpoint's step (collect_greedy=False in collection): PPO-style policies
sample from pi, Q-learners act epsilon-greedily at the epsilon their schedule has at that step. The torch / numpy /
python RNGs it draws from are seeded by lca.pair_seed and kept apart from the run's (saved and restored around each
episode), so the items are the same for the same seed and the caller's random streams are untouched. The pair set
records the checkpoint folder, its step and the SHA-256 of its agent.th (info["rollout_policy"]); the task puts the
hash into the rankings id, so another checkpoint gives another file.
An item is (transition, agent i), made only for agents that acted (a_i != env.stay_action: staying still gets reward
0 in LCA, so it is never asked) and only once per (s, a, s', i) (exact bytes of the state vectors). Counts: lca.n_pairs
items in total, or when null the paper's: Two-Switch 4400 in total (one shared potential), Victim-Rubble 2000 per
agent (sampling continues until each agent has its 2000; items of a full agent are skipped), Pistonball 1000 in
total. Everything is seeded by lca.pair_seed: the same seed gives the same items with the same ids
"pair:<transition:05d>:a<i>" (transitions numbered in the order they first gave an item). Sampling shows a bar over
the items on a terminal and logs a line every minute (items, transitions, rate, time left), and gives up with an
error naming the count it reached when STALL_TRANSITIONS transitions in a row give no new item (the source has about
that many distinct items: a huge lca.n_pairs stops there, not after hours) or after 50x the wanted items in
transitions. No env here can count its distinct items in advance (the grids' states include positions, facings,
progress and the step count: far more than any n_pairs), so the stall is the check. The oracle (env.pair_oracle:
better | worse | equal) of every item is computed here: it is stored for accuracy and used as the answer only by the
oracle rankers.

Coverage: for an env whose state has a `ball_x` field (Pistonball) the pair set reports how the ball's x of s is spread
over 10 equal bins of [0, 1] (counts, share of bins visited, min, max): rollouts of a random policy rarely carry the
ball far, so low coverage explains weak potentials away from the start.

Key steps (§4.1). Random episodes (at most KEYSTEP_EPISODES, each of at most lca.keystep_max_steps steps) are played
in an env built with no time limit that ends earlier and no step penalty where its env_args have them
(episode_limit / max_cycles = the cap, step_penalty none, time_penalty 0, individual_reward off, Pistonball's reward
sparse so it fires only at the wall). The first episode that ends in a terminal gives the key steps: every step where
the team reward fired (non-zero: a negative one is marked "a state to avoid", as §4.1 reads r < 0), in order, with
the counters of the step info that rose (e.g. switches_triggered 0 -> 1) and the labelled lines ("Switch1: ...",
"Agent 0 (...): at ...": those with a colon) of env.describe_state that changed since the previous key step;
drawings such as the grid's map rows are left out (partial map rows read badly; the start state is shown in full in
the prompt as the map). `lca.keystep_policy=oracle` plays env.oracle_actions() instead of random actions;
`lca.keysteps_file` gives the text directly. No episode finishing is an error naming the cap and both alternatives.
The key steps assume a sparse team reward: an env whose per-step penalty keystep_overrides does not switch off would
make every step "a state to avoid"; give such an env its key steps as text.
"""
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace as SN

import numpy as np

from controllers.behaviour_mac import BehaviourMAC, load_policy
from envs.multiagentenv import MultiAgentEnv
from offline.collection import checkpoint_hashes, make_runner, play
from utils.checkpoint import CheckpointError, load_run_config, locate_checkpoint
from utils.config import CHOICES, ConfigError
from utils.logging import Logger
from utils.paths import repo_relative
from utils.progress import Bar, Clock
from utils.seeding import rng_state, set_rng_state, set_seeds

PAIR_SOURCES = CHOICES["lca.pair_source"]  # random_states | rollouts | mixed | auto
PAPER_COUNTS = {"two_switch": ("total", 4400), "victim_rubble": ("per_agent", 2000), "pistonball": ("total", 1000)}
ORACLE_ANSWERS = ("better", "worse", "equal")
MAX_TRANSITIONS_PER_ITEM = 50
STALL_TRANSITIONS = 20_000  # transitions in a row without a new item after which sampling stops, naming the count
PROGRESS_LOG_S = 60.0  # a log line this often while sampling (the bar shows on a terminal only)
KEYSTEP_EPISODES = 3
COVERAGE_BINS = 10
ROLLOUT_POLICY = "checkpoint"  # the BehaviourMAC name of the loaded policy
UNIFORM_ROLLOUTS = "uniform random over the available actions"
ACTING = ("sampled: the policy's own action selector in train mode at the checkpoint's step (pi for PPO-style "
          "policies, epsilon-greedy at that step's epsilon for Q-learners)")


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


@dataclass
class RolloutCheckpoint:
    """The trained policy of `lca.rollout_checkpoint`: its checkpoint folder, step, run config and agent.th hash."""
    given: str  # lca.rollout_checkpoint as set
    path: str  # the checkpoint folder (results/models/<run>/<t_env>), absolute
    step: int  # its t_env (the epsilon schedule's step for Q-learners)
    run_config: dict  # the run's saved config.json
    sha256: str  # of its agent.th: what identifies the policy (the folder may move)

    def provenance(self):
        return {"checkpoint": self.path, "step": self.step, "sha256": self.sha256, "acting": ACTING}


def _env_args(env_args):
    return json.loads(json.dumps({k: v for k, v in (env_args or {}).items() if k != "seed"}))


def locate_rollout_checkpoint(given, env_name, env_args):
    """The RolloutCheckpoint `given` names (a run folder: its latest step), checked to be of env `env_name` with
    `env_args` (seed aside); ConfigError naming what is wrong otherwise."""
    folder = repo_relative(given)
    if not os.path.isdir(folder):
        raise ConfigError(f"lca.rollout_checkpoint={given!r} is not a folder; pass a trained run's "
                          f"results/models/<run> folder (its latest step) or one of its numbered step folders, or "
                          f"leave it empty for a uniform random rollout policy")
    try:
        run_dir, path = locate_checkpoint(folder)
    except (FileNotFoundError, CheckpointError) as e:
        raise ConfigError(f"lca.rollout_checkpoint={given!r}: {e}") from None
    run_config = load_run_config(run_dir)
    if run_config is None:
        raise ConfigError(f"lca.rollout_checkpoint={given!r}: {run_dir} has no config.json (checkpoints written before "
                          f"configs were saved); copy the config.json of the run that trained it "
                          f"(results/sacred/<alg>/<env>/<id>/config.json) into {run_dir}, or retrain")
    theirs, ours = (run_config.get("env"), _env_args(run_config.get("env_args"))), (env_name, _env_args(env_args))
    if theirs != ours:
        diff = sorted(k for k in set(theirs[1]) | set(ours[1]) if theirs[1].get(k) != ours[1].get(k))
        raise ConfigError(f"lca.rollout_checkpoint {path} was trained on env '{theirs[0]}' with env_args {theirs[1]}, "
                          f"but these pairs are of env '{ours[0]}' with env_args {ours[1]} (differing: "
                          f"{diff or 'env'}); pass a checkpoint of the same env and env_args")
    step = os.path.basename(os.path.normpath(path))
    return RolloutCheckpoint(str(given), os.path.abspath(path), int(step), run_config,
                             checkpoint_hashes(run_dir, [step])[step])


class _OwnRNG:
    """The python / numpy / torch global RNG states of one seeded stream, swapped in only while it draws, so the
    caller's streams are untouched and the stream's draws do not depend on what ran in between."""

    def __init__(self, seed):
        outer = rng_state()
        set_seeds(int(seed))
        self.state = rng_state()
        set_rng_state(outer)

    def __enter__(self):
        self.outer = rng_state()
        set_rng_state(self.state)

    def __exit__(self, *exc):
        self.state = rng_state()
        set_rng_state(self.outer)


def _policy_rollout_stream(checkpoint, run_args, env_info, seed):
    """(s, a, s', obs, obs') of episodes the checkpoint's policy plays in its own episode runner (env seeded by
    `seed`), acting as ACTING says."""
    rng = _OwnRNG(seed)
    with rng:  # building the networks draws their (overwritten) initial weights
        policy = load_policy(checkpoint.run_config, checkpoint.path, env_info)
    mac = BehaviourMAC({ROLLOUT_POLICY: policy}, greedy=False, policy_t_env={ROLLOUT_POLICY: checkpoint.step})
    args = SN(**{**vars(run_args), "runner": "episode", "batch_size_run": 1})  # one env in-process: no workers
    runner = make_runner(args, Logger(None), int(seed), mac, env_info)  # a silent logger
    try:
        while True:
            with rng:
                _, batch = next(play(runner, mac, [[ROLLOUT_POLICY] * env_info["n_agents"]], test_mode=False))
            T = batch.max_t_filled() - 1  # steps played; the batch holds T + 1 states
            state, obs = batch["state"][0].numpy(), batch["obs"][0].numpy()
            actions = batch["actions"][0, :, :, 0].numpy().astype(np.int64)
            for t in range(T):
                yield state[t], actions[t], state[t + 1], obs[t], obs[t + 1]
    finally:
        runner.close_env()


def sample_pairs(env, env_name, pair_source, n_pairs, pair_seed, rollout_checkpoint="", run_args=None, log=None):
    """The PairSet of these settings (see the module docstring); `pair_source` resolved (not auto).
    `rollout_checkpoint`: "" (uniform random rollouts), lca.rollout_checkpoint as set, or its RolloutCheckpoint;
    a checkpoint needs `run_args` (the run's args: env_args, truncation_as_terminal, ... for its runner). `log`: a
    function taking the progress line logged every PROGRESS_LOG_S seconds."""
    require(env, ("stay_action", "pair_oracle"), "LCA's pair sampling")
    checkpoint = None
    if rollout_checkpoint:
        if pair_source not in ("rollouts", "mixed"):
            raise ConfigError(f"lca.rollout_checkpoint={getattr(rollout_checkpoint, 'given', rollout_checkpoint)!r} "
                              f"plays rollouts, but lca.pair_source is {pair_source} here; use lca.pair_source="
                              f"rollouts or mixed, or leave lca.rollout_checkpoint empty")
        if run_args is None:
            raise ValueError("sample_pairs: a rollout_checkpoint needs run_args (the run's args) for its runner")
        checkpoint = rollout_checkpoint if isinstance(rollout_checkpoint, RolloutCheckpoint) else \
            locate_rollout_checkpoint(rollout_checkpoint, env_name, run_args.env_args)
    mode, count = pair_target(n_pairs, env_name)
    n = env.n_agents
    stay = int(env.stay_action)
    rng = np.random.default_rng([int(pair_seed), 0])
    if checkpoint is None:
        rollouts = _rollout_stream(env, np.random.default_rng([int(pair_seed), 1]), pair_seed, pair_source == "mixed")
    else:
        rollouts = _policy_rollout_stream(checkpoint, run_args, env.get_env_info(), pair_seed)
    sources = {"random_states": [_random_state_stream(env, rng)], "rollouts": [rollouts],
               "mixed": [_random_state_stream(env, rng), rollouts]}[pair_source]
    wanted = count * n if mode == "per_agent" else count
    per_agent = np.zeros(n, dtype=np.int64)
    seen, kept, items, oracle = set(), [], [], []
    stats = {"transitions": 0, "stay": 0, "duplicates": 0, "agent_full": 0}
    last_new, clock, logged = 0, Clock(0, wanted), time.monotonic()
    with Bar(wanted, desc="lca pairs", unit="item") as bar:
        while len(items) < wanted:
            stalled = stats["transitions"] - last_new >= STALL_TRANSITIONS
            if stalled or stats["transitions"] >= MAX_TRANSITIONS_PER_ITEM * wanted + 1000:
                why = (f"none new in the last {STALL_TRANSITIONS} transitions: the source has about that many "
                       f"distinct items" if stalled else "too few distinct ones")
                most = f"at most {len(items)} here"
                if mode == "per_agent":
                    most = f"a total of {most}; the paper's count per agent got {per_agent.tolist()} of {count} each"
                raise ConfigError(f"lca pairs: only {len(items)} distinct (pair, agent) items after "
                                  f"{stats['transitions']} transitions from {pair_source} (wanted {wanted}; {why}); "
                                  f"lower lca.n_pairs ({most}) or use another lca.pair_source")
            if log is not None and time.monotonic() - logged >= PROGRESS_LOG_S:
                logged = time.monotonic()
                log(f"lca pairs: {len(items)} / {wanted} items from {stats['transitions']} transitions, "
                    f"{clock.rate(len(items)):.0f} items/s, {clock.left_str(len(items))}")
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
            last_new = stats["transitions"]
            bar.update_to(len(items))
    state, action, next_state, obs, next_obs = (np.stack(x) for x in zip(*kept))
    info = {"pair_source": pair_source, "target": {"mode": mode, "count": count}, "items": len(items),
            "items_per_agent": per_agent.tolist(), "kept_transitions": len(kept), **stats,
            "oracle_counts": {k: oracle.count(k) for k in ORACLE_ANSWERS}}
    if pair_source in ("rollouts", "mixed"):
        info["rollout_policy"] = UNIFORM_ROLLOUTS if checkpoint is None else checkpoint.provenance()
    if checkpoint is not None:
        rollouts.close()  # its runner's env
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
            team = float(np.sum(reward))
            if team != 0:  # §4.1: r > 0 marks a landmark of the task, r < 0 a state to avoid
                rose = [f"{k} {counters.get(k, 0):g} -> {v:g}" for k, v in now.items() if v > counters.get(k, 0)]
                lines = env.describe_state().splitlines()
                # labelled facts only ("Switch1: ..."): drawing rows (the grid's map) have no colon and are shown once
                changed = [line for line in lines if line not in previous and ":" in line]
                events.append(f"Key step {len(events) + 1} (step {t + 1}, team reward {team:+g}"
                              + ("; a state to avoid" if team < 0 else "")
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
