"""How an env describes itself to an LLM: named fields of the global state, action meanings,
reward composition, and text renderings of a state or a short segment.

QLLM task prompts and the labelers' prompts are built from these descriptions, never copied
by hand per task, so a wrong index here would silently mislead the LLM: `check_schema`
verifies that the fields cover the state vector exactly once.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Field:
    name: str
    start: int  # state[start:end] (or obs[start:end] in an observation schema)
    end: int
    meaning: str
    identity: bool = False  # obs schemas: says who the agent is (role one-hot, agent id, colour), not where it is

    @property
    def size(self):
        return self.end - self.start


def check_schema(fields, state_size, what="state"):
    """Raise ValueError unless the fields tile [0, state_size) exactly once; `what`: "state" or "observation"."""
    count = np.zeros(state_size, dtype=int)
    for f in fields:
        if not 0 <= f.start < f.end <= state_size:
            raise ValueError(f"field '{f.name}' [{f.start}:{f.end}] is outside the {what} (size {state_size})")
        count[f.start:f.end] += 1
    missing, doubled = np.flatnonzero(count == 0), np.flatnonzero(count > 1)
    if len(missing) or len(doubled):
        raise ValueError(f"{what} schema does not cover the {what} exactly once: uncovered indices "
                         f"{missing.tolist()}, indices in several fields {doubled.tolist()}")


def identity_dims(env):
    """Observation indices of the identity fields of `env.obs_schema()` (sorted ints; [] when there are none): what
    a potential shared by interchangeable agents must not see (LCA Eq. 5). The schema is checked against
    get_obs_size() first."""
    fields = env.obs_schema()
    check_schema(fields, env.get_obs_size(), "observation")
    return sorted(k for f in fields if f.identity for k in range(f.start, f.end))


def schema_text(fields):
    """One line per field: `state[a:b] name: meaning`."""
    return "\n".join(f"state[{f.start}:{f.end}] {f.name}: {f.meaning}" for f in fields)


def _values(values):
    return ", ".join(f"{v:g}" for v in np.asarray(values, dtype=float).ravel())


def render_state(fields, state):
    return "\n".join(f"{f.name} = [{_values(state[f.start:f.end])}]" for f in fields)


def render_segment(fields, states, actions, rewards, action_meanings):
    """A few consecutive steps: the state, each agent's action (by meaning) and the team reward."""
    lines = []
    for t, (state, joint, reward) in enumerate(zip(states, actions, rewards)):
        acts = ", ".join(f"agent {i}: {action_meanings[int(a)]}" for i, a in enumerate(np.ravel(joint)))
        lines += [f"step {t}:", render_state(fields, state), f"actions: {acts}", f"reward: {float(reward):g}"]
    return "\n".join(lines)


def task_prompt(env):
    """Task, state layout, actions and reward of an env, in the order of QLLM's task prompts.

    Built only from the env's own description methods, so it cannot drift from the state the
    env really produces (tests perturb the game one field at a time and check the indices)."""
    fields = env.state_schema()
    check_schema(fields, env.get_state_size())
    actions = "\n".join(f"{k}: {m}" for k, m in enumerate(env.action_meanings()))
    return "\n\n".join([
        env.task_summary(),
        f"1. Global state: a vector of {env.get_state_size()} numbers, `state[a:b]` meaning indices a to b-1:\n"
        + schema_text(fields),
        f"2. Actions: each of the {env.n_agents} agents picks one of {env.get_total_actions()} discrete actions "
        f"per step (unavailable actions are masked):\n{actions}",
        f"3. Reward: {env.reward_description()}",
    ])
