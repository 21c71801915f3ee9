"""Text summaries of whole episodes for LLM judges (MisoDICE App. B.2.2: the features a labeler compares).

`MultiAgentEnv.describe_episode(states, actions, filled, terminated)` turns one stored episode (the offline
dataset's padded layout) into a few hundred words. The generic default works for any env with a state schema:
length and how the episode ended, each field's start and end values and how often it changed, each agent's actions
counted by meaning, and a short timeline. Envs with better features (LBF, MPE spread, SMAX) override
`episode_sections` and reuse the pieces here.

Why these choices:
- Rewards and returns are left out unless the caller passes them (`prompt_show_reward`): shown the return, a model
  only replays the return rule and the labels carry no information beyond the oracle's.
- The timeline shows at most `max_steps` evenly spaced steps (first and last included), so the prompt of a
  1000-step episode is as long as that of a 50-step one; the summary's other parts do not grow with the length.
- Padding (steps past `filled`) never enters a count.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class Episode:
    states: np.ndarray  # [L+1, S]: the state before every transition and the final state
    actions: np.ndarray  # [L, n] int: the joint action of every transition
    length: int  # L transitions
    terminated: bool  # a real terminal; otherwise the episode was cut by the time limit
    rewards: np.ndarray = None  # [L] team reward per transition, only when the prompt may show it


def as_episode(states, actions, filled, terminated, rewards=None):
    """The valid part of one padded episode: `states [T+1, S]`, `actions [T+1, n(, 1)]`, `filled [T+1(, 1)]`
    (steps 0..L filled for L transitions), `terminated` a bool or the per-step flags `[T+1(, 1)]`."""
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2:
        raise ValueError(f"describe_episode: states must be [T+1, S], got shape {states.shape}")
    filled = np.asarray(filled).reshape(len(states), -1)[:, 0] != 0
    n_filled = int(filled.sum())
    if n_filled < 1 or not filled[:n_filled].all():
        raise ValueError(f"describe_episode: filled must be 1s then 0s with at least one 1, got {filled.astype(int)}")
    length = n_filled - 1
    acts = np.asarray(actions).reshape(len(states), -1)[:length].astype(np.int64)
    term = np.asarray(terminated)
    term = bool(term.reshape(-1)[:max(length, 1)].any()) if term.ndim else bool(term)
    rew = None if rewards is None else np.asarray(rewards, dtype=np.float64).reshape(len(states), -1)[:length, 0]
    return Episode(states[:n_filled], acts, length, term, rew)


def sample_steps(length, max_steps):
    """Up to `max_steps` step indices in 0..length, evenly spaced, first and last included (sorted, distinct)."""
    if max_steps <= 0:
        return []
    if max_steps == 1:
        return [length]
    return sorted({int(round(x)) for x in np.linspace(0, length, min(max_steps, length + 1))})


def short_meaning(meaning):
    """'move_left: push in -x' -> 'move_left'; 'attack enemy_0 (only when ...)' -> 'attack enemy_0'."""
    return meaning.split(":")[0].split("(")[0].strip() or meaning


def fmt(values, digits=3):
    """Numbers as `[a, b]` with `digits` significant digits (a single value without brackets)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    text = ", ".join(f"{v:.{digits}g}" for v in values)
    return text if values.size == 1 else f"[{text}]"


def ending(env, ep):
    limit = env.episode_limit
    if ep.terminated:
        return f"The episode lasted {ep.length} steps and ended in a terminal state (the limit is {limit} steps)."
    return f"The episode lasted {ep.length} steps and was cut by the time limit of {limit} steps (no terminal state)."


def action_counts(env, ep):
    """One line per agent: its actions counted by meaning, most frequent first."""
    names = [short_meaning(m) for m in env.action_meanings()]
    lines = ["Actions taken (count per agent):"]
    for i in range(ep.actions.shape[1]):
        counts = np.bincount(ep.actions[:, i], minlength=len(names))
        order = sorted((k for k in range(len(counts)) if counts[k]), key=lambda k: (-counts[k], k))
        text = ", ".join(f"{names[k] if k < len(names) else f'action {k}'} {counts[k]}" for k in order)
        lines.append(f"- agent {i}: {text or 'none'}")
    return "\n".join(lines)


def field_changes(fields, ep):
    """Start and end of every field that changed, how many steps changed it; the unchanged ones by name."""
    s = ep.states
    lines, same = ["State fields, start -> end:"], []
    for f in fields:
        part = s[:, f.start:f.end]
        changes = int((np.abs(np.diff(part, axis=0)) > 1e-6).any(axis=1).sum())
        if changes == 0:
            same.append(f.name)
        else:
            lines.append(f"- {f.name}: {fmt(part[0])} -> {fmt(part[-1])} (changed in {changes} of {ep.length} "
                         f"steps)")
    if same:
        lines.append(f"- unchanged: {', '.join(same)}")
    return "\n".join(lines)


def generic_timeline(fields, ep, max_steps):
    """The changing fields at a few evenly spaced steps."""
    steps = sample_steps(ep.length, max_steps)
    if not steps:
        return ""
    s = ep.states
    moving = [f for f in fields if (np.abs(np.diff(s[:, f.start:f.end], axis=0)) > 1e-6).any()]
    if not moving:
        return ""
    lines = [f"Timeline ({len(steps)} of {ep.length + 1} steps):"]
    for t in steps:
        lines.append(f"- step {t}: " + "; ".join(f"{f.name} {fmt(s[t, f.start:f.end])}" for f in moving))
    return "\n".join(lines)


def reward_text(ep):
    if ep.rewards is None:
        return ""
    return f"Team return (sum of the rewards): {ep.rewards.sum():.4g}."


def generic_sections(env, ep, max_steps):
    fields = env.state_schema()
    return [ending(env, ep), field_changes(fields, ep), action_counts(env, ep),
            generic_timeline(fields, ep, max_steps)]


def episode_text(sections, ep):
    """The sections (empty ones dropped) and, when the rewards were given, the return last."""
    return "\n".join(s for s in [*sections, reward_text(ep)] if s)
