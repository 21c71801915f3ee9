"""describe_episode: the episode summaries an LLM labeler compares (envs/episode.py and the LBF, MPE spread and SMAX
versions), on real rollouts stored in the offline dataset's padded layout."""
import re

import numpy as np
import pytest

from envs import make_env
from helpers import require_extra

LOAD, NORTH, SOUTH, WEST, EAST, STAY = 5, 1, 2, 3, 4, 0


def rollout(env, policy, pad=None):
    """One episode as the dataset stores it: states [T+1, S], actions [T+1, n, 1], filled [T+1, 1], terminated and
    reward [T+1, 1] (padding filled with junk, which no summary may read), and the infos."""
    T = pad or env.episode_limit
    env.reset()
    states, actions, rewards, infos, term = [env.get_state()], [], [], [], False
    while not term and len(actions) < env.episode_limit:
        a = policy(env)
        r, term, info = env.step(a)
        actions.append(a)
        rewards.append(r)
        infos.append(info)
        states.append(env.get_state())
    L = len(actions)
    S = np.full((T + 1, len(states[0])), 99.0)
    S[: L + 1] = states
    A = np.full((T + 1, env.n_agents, 1), 3)
    A[:L, :, 0] = actions
    F = np.zeros((T + 1, 1))
    F[: L + 1] = 1
    terminated = np.zeros((T + 1, 1))
    terminated[L - 1] = term and not infos[-1].get("episode_limit", False)
    R = np.full((T + 1, 1), 7.0)
    R[:L, 0] = rewards
    return S, A, F, terminated, R, infos


def random_policy(seed):
    rng = np.random.default_rng(seed)

    def act(env):
        return [int(rng.choice(np.flatnonzero(av))) for av in np.asarray(env.get_avail_actions())]
    return act


def lbf_forager(seed):
    """Each agent walks next to the first food left (by slot) and loads; a random step when blocked."""
    rng = np.random.default_rng(seed)

    def act(env):
        s, n = env.get_state(), env.n_agents
        foods = s[3 * n: 3 * n + 3 * env.n_food].reshape(-1, 3)
        left = [f for f in foods if f[2] > 0]
        out = []
        for i in range(n):
            avail = env.get_avail_agent_actions(i)
            r, c = s[3 * i: 3 * i + 2]
            if not left:
                out.append(STAY)
                continue
            fr, fc = left[0][:2]
            if abs(fr - r) + abs(fc - c) == 1:
                out.append(LOAD)
                continue
            wish = [NORTH if fr < r else SOUTH if fr > r + 1 or (fr > r and fc != c) else None,
                    WEST if fc < c - 1 or (fc < c and fr != r) else EAST if fc > c else None]
            wish = [w for w in wish if w is not None and avail[w]]
            out.append(wish[0] if wish and rng.random() < 0.9 else int(rng.choice(np.flatnonzero(avail))))
        return out
    return act


@pytest.fixture(scope="module")
def lbf():
    return make_env("lbf", key="Foraging-8x8-2p-2f-coop-v3", time_limit=50, seed=3)


def test_lbf_names_the_food_picked_by_whom_and_when(lbf):
    for seed in range(20):
        S, A, F, term, R, infos = rollout(lbf, lbf_forager(seed))
        text = lbf.describe_episode(S, A, F, term)
        if "picked up by" in text:
            break
    else:
        pytest.fail("the scripted foragers never picked up food")
    L = int(F.sum()) - 1
    n0 = int((S[0, 6:12].reshape(2, 3)[:, 2] > 0).sum())
    nL = int((S[L, 6:12].reshape(2, 3)[:, 2] > 0).sum())
    assert f"Food collected: {n0 - nL} of {n0}." in text
    picks = re.findall(r"step (\d+): food (\d) \(level \S+ at row \S+, column \S+\) picked up by agent 0 \(level \S+\) "
                       r"and agent 1", text)
    assert picks, text  # cooperative foraging: both agents load together
    for t, j in picks:
        t, j = int(t), int(j)
        assert S[t - 1, 6 + 3 * j + 2] > 0 and S[t, 6 + 3 * j + 2] == 0
        assert (A[t - 1, :, 0] == LOAD).all()
    ended = "ended in a terminal state" if term.any() else "was cut by the time limit"
    assert f"The episode lasted {L} steps and {ended}" in text
    assert "return" not in text.lower()  # rewards hidden unless given


def test_padding_never_enters_the_summary_and_rewards_only_when_given(lbf):
    S, A, F, term, R, _ = rollout(lbf, random_policy(1), pad=80)
    text = lbf.describe_episode(S, A, F, term)
    L = int(F.sum()) - 1
    assert lbf.describe_episode(S[: L + 1], A[: L + 1], F[: L + 1], term[: L + 1]) == text
    assert lbf.describe_episode(S, A.reshape(len(A), -1), F.ravel(), bool(term.any())) == text
    counts = re.findall(r"- agent 0: (.*)", text)[0]
    assert sum(int(x) for x in re.findall(r" (\d+)(?:,|$)", counts)) == L
    shown = lbf.describe_episode(S, A, F, term, rewards=R)
    assert shown.startswith(text) and f"Team return (sum of the rewards): {R[:L, 0].sum():.4g}." in shown


def test_summary_max_steps_bounds_the_timeline(lbf):
    S, A, F, term, _, _ = rollout(lbf, random_policy(2))
    lines = lbf.describe_episode(S, A, F, term, max_steps=4).splitlines()
    steps = [ln for ln in lines if ln.startswith("- step ") and "; food " in ln]
    assert len(steps) == 4 and steps[0].startswith("- step 0:") and steps[-1].startswith(f"- step {int(F.sum()) - 1}:")
    assert "Timeline" not in lbf.describe_episode(S, A, F, term, max_steps=0)
    long_env = make_env("lbf", key="Foraging-8x8-2p-2f-coop-v3", time_limit=500, seed=3)
    S2, A2, F2, t2, _, _ = rollout(long_env, random_policy(2))
    assert len(long_env.describe_episode(S2, A2, F2, t2, max_steps=8)) < 2 * len(lbf.describe_episode(S, A, F, term))


def test_generic_default_from_the_state_schema():
    env = make_env("matrix_game", game="climbing", episode_limit=6)
    S, A, F, term, _, _ = rollout(env, random_policy(0), pad=9)
    text = env.describe_episode(S, A, F, term, max_steps=3)
    assert "The episode lasted 6 steps and was cut by the time limit of 6 steps" in text
    assert "State fields, start -> end:" in text and "Actions taken (count per agent):" in text
    assert "Timeline (3 of 7 steps)" in text
    names = [m.split(":")[0].split("(")[0].strip() for m in env.action_meanings()]
    for i in range(2):
        counts = np.bincount(A[:6, i, 0], minlength=3)
        line = re.findall(rf"- agent {i}: (.*)", text)[0]
        assert {k: int(v) for k, v in re.findall(r"(.+?) (\d+)(?:, |$)", line)} == \
            {names[k]: int(c) for k, c in enumerate(counts) if c}


def test_mpe_spread_coverage_and_collisions_match_the_env():
    env = make_env("mpe", scenario="spread", seed=0)
    S, A, F, term, _, infos = rollout(env, random_policy(4))
    text = env.describe_episode(S, A, F, term)
    assert f"at the end: {infos[-1]['occupied_landmarks']} of 3" in text
    assert f"Collisions: {infos[-1]['collisions']} touching agent pairs" in text
    assert "cut by the time limit of 25 steps" in text and "move_" in text


def test_smax_outcome_deaths_and_health():
    require_extra("jaxmarl", "./install.sh smax")
    env = make_env("smax", map_name="3m", seed=0)
    S, A, F, term, _, infos = rollout(env, random_policy(0))
    text = env.describe_episode(S, A, F, term)
    last = infos[-1]
    outcome = "WON" if last["battle_won"] else "LOST" if last["dead_allies"] == 3 else "not decided"
    assert f"Outcome: {outcome}" in text or (outcome == "LOST" and "DRAW" in text)
    assert f"Allies alive at the end: {3 - last['dead_allies']} of 3; enemies alive: {3 - last['dead_enemies']} of 3" \
        in text
    deaths = re.findall(r"Deaths \(step\): (.*)", text)[0]
    assert (0 if deaths == "none" else len(deaths.split(", "))) == last["dead_allies"] + last["dead_enemies"]
    assert len(re.findall(r"- (ally|enemy)_\d \(marine\): \d+ -> \d+ of 45", text)) == 6
