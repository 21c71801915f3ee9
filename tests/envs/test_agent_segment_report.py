"""The env hook agent_segment_report (CODI's agent-quality prompt): hand-built spread segments, rollouts of world and
LBF checked against the simulators' own positions, and envs without the hook refused by name."""
import json

import numpy as np
import pytest

from envs import make_env

LANDMARKS = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def spread_obs(P, L=LANDMARKS):
    """Spread observations [H, n, O] of agent positions P [H, n, 2] (zero velocities): the env's own layout."""
    H, n = P.shape[:2]
    rows = []
    for h in range(H):
        row = []
        for i in range(n):
            others = [k for k in range(n) if k != i]
            row.append(np.concatenate([[0, 0], P[h, i], (L - P[h, i]).ravel(), (P[h, others] - P[h, i]).ravel(),
                                       np.zeros(2 * (n - 1))]))
        rows.append(row)
    return np.array(rows)


@pytest.fixture(scope="module")
def spread():
    env = make_env("mpe", scenario="spread", N=3, max_cycles=10)
    yield env
    env.close()


def test_spread_scorecard_matches_a_hand_computation(spread):
    # agent 0 walks from (0.4, 0) towards landmark 0 at the origin; agents 1 and 2 touch (0.28 apart < 0.3) at
    # steps 1 and 2; steps 4..5 are padding past the episode's end (garbage that must not count)
    P = np.array([[[0.4, 0.0], [1.5, 0.4], [0.3, 1.5]],
                  [[0.3, 0.0], [1.1, 0.9], [0.9, 1.1]],
                  [[0.35, 0.0], [1.1, 0.9], [0.9, 1.1]],
                  [[0.1, 0.0], [1.5, 0.4], [0.3, 1.5]],
                  [[9.0, 9.0], [9.0, 9.0], [9.0, 9.0]],
                  [[9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]])
    obs_valid = np.array([1, 1, 1, 1, 0, 0], bool)
    step_valid = np.array([1, 1, 1, 0, 0, 0], bool)
    actions = np.array([[1, 0, 4], [2, 3, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    rep = spread.agent_segment_report(spread_obs(P), actions, np.zeros(6), obs_valid, step_valid)
    json.dumps(rep)  # JSON-able
    card = rep["agents"][0]["scorecard"]
    assert card["distance_start"] == pytest.approx(0.4) and card["distance_end"] == pytest.approx(0.1)
    assert card["delta_d"] == pytest.approx(0.1 - 0.4)
    assert (card["steps_closer"], card["steps_farther"]) == (2, 1)  # 0.4 -> 0.3 -> 0.35 -> 0.1
    assert card["favourite_landmark"] == 0 and card["favourite_fraction"] == 1.0 and card["collision_steps"] == 0
    timeline = rep["agents"][0]["timeline"]
    assert [row["t"] for row in timeline] == [0, 1, 2, 3]  # padding left out
    assert "delta_d" not in timeline[0] and timeline[2]["delta_d"] == pytest.approx(0.05)
    assert [row["action"] for row in timeline] == ["move_left", "move_right", "move_left", "none (episode over)"]
    # agent 1 is nearest to landmark 1 throughout, back at its start at step 3: delta_d 0
    d1 = np.sqrt(0.5 ** 2 + 0.4 ** 2)
    assert rep["agents"][1]["scorecard"]["delta_d"] == pytest.approx(0.0)
    assert rep["agents"][1]["scorecard"]["distance_start"] == pytest.approx(d1)
    assert rep["agents"][1]["scorecard"]["collision_steps"] == rep["agents"][2]["scorecard"]["collision_steps"] == 2
    team = rep["team"]
    assert team["collision_steps"] == 2
    # landmark distance sum at the start: landmark 0 <- agent 0 (0.4), 1 <- agent 1 (d1), 2 <- agent 2 (0.3, 0.5)
    assert team["landmark_distance_sum_start"] == pytest.approx(0.4 + d1 + np.sqrt(0.3 ** 2 + 0.5 ** 2))
    assert team["shared_nearest_landmark_fraction"] == 0.0
    assert "delta_d" in rep["legend"]


def test_spread_rejects_bad_shapes(spread):
    P = np.zeros((4, 3, 2))
    with pytest.raises(ValueError, match=r"expected obs \[H, 3, 18\]"):
        spread.agent_segment_report(spread_obs(P)[:, :2], np.zeros((4, 2)), np.zeros(4), np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="first observation must be valid"):
        spread.agent_segment_report(spread_obs(P), np.zeros((4, 3)), np.zeros(4), np.zeros(4), np.zeros(4))


def rollout(env, steps, policy, truth):
    """obs [steps, n, O], actions [steps, n] and truth(env) per step of a fresh episode."""
    env.reset()
    obs, actions, true = [], [], []
    for _ in range(steps):
        o = np.asarray(env.get_obs())
        a = policy(o)
        obs.append(o), actions.append(a), true.append(truth(env))
        env.step(a)
    return np.stack(obs), np.stack(actions), true


def test_world_distances_follow_the_simulator():
    env = make_env("mpe", scenario="world", num_adversaries=3, num_good=3, num_obstacles=2, prey_policy="random",
                   max_cycles=25, seed=3)
    rng = np.random.default_rng(0)
    obs, actions, true = rollout(env, 8, lambda o: rng.integers(0, 5, 3), lambda e: e._P.copy())
    valid = np.ones(8, bool)
    rep = env.agent_segment_report(obs, actions, np.zeros(8), valid, valid)
    for h, P in enumerate(true):
        dist = np.sqrt(np.square(P[None, 3:] - P[:3, None]).sum(-1))  # [predator, prey]
        for i in range(3):
            row = rep["agents"][i]["timeline"][h]
            assert row["distance"] == pytest.approx(dist[i].min(), abs=1e-5) and row["nearest_prey"] == dist[i].argmin()
    contacts = sum(int((np.sqrt(np.square(P[None, 3:] - P[:3, None]).sum(-1)) < 0.125).sum()) for P in true)
    assert rep["team"]["prey_contacts"] == contacts
    assert set(rep["agents"][0]["scorecard"]) >= {"delta_d", "favourite_prey", "prey_contact_steps"}


def test_lbf_distances_and_pickups_follow_the_game():
    env = make_env("lbf", key="Foraging-5x5-2p-1f-coop-v3", time_limit=30, seed=1)
    game = env._unwrapped

    targets = []

    def greedy(o):  # each agent walks to its own side of the food and loads there (the coop food needs both)
        foods = np.argwhere(game.field > 0)
        if not len(foods):
            return np.zeros(2, dtype=np.int64)
        if not targets:  # the nearest free side, agent 0 first
            sides = [foods[0] + d for d in ([0, -1], [0, 1], [-1, 0], [1, 0]) if ((foods[0] + d >= 0)
                                                                                 & (foods[0] + d < 5)).all()]
            for p in game.players:
                targets.append(sides.pop(int(np.argmin([np.abs(c - p.position).sum() for c in sides]))))
        avail = np.asarray(env.get_avail_actions())
        acts = []
        for i, p in enumerate(game.players):
            dr, dc = targets[i] - np.array(p.position)
            moves = [2 if dr > 0 else 1] * int(dr != 0) + [4 if dc > 0 else 3] * int(dc != 0)
            acts.append(5 if dr == dc == 0 else next((m for m in moves if avail[i, m]), 0))
        return np.array(acts)

    def truth(e):
        foods = np.argwhere(game.field > 0)
        return [min((abs(f - np.array(p.position)).sum() for f in foods), default=None) for p in game.players], \
            len(foods)

    obs, actions, true = rollout(env, 12, greedy, truth)
    valid = np.ones(12, bool)
    rep = env.agent_segment_report(obs, actions, np.zeros(12), valid, valid)
    json.dumps(rep)
    for h, (dists, _) in enumerate(true):
        assert [rep["agents"][i]["timeline"][h]["food_distance"] for i in range(2)] == dists
    picked_steps = sum(true[h][1] > true[h + 1][1] for h in range(11))
    assert picked_steps == 1, "the greedy pair should pick the food within the segment"
    assert rep["team"]["steps_with_a_pickup"] == 1
    assert [a["scorecard"]["food_picked_up"] for a in rep["agents"]] == [1, 1]
    assert rep["agents"][0]["scorecard"]["level"] == game.players[0].level


def test_envs_without_the_hook_are_named():
    adversary = make_env("mpe", scenario="adversary", N=2, max_cycles=5)
    with pytest.raises(NotImplementedError, match="scenario 'adversary'.*spread, tag and world"):
        adversary.agent_segment_report(np.zeros((2, 2, 10)), np.zeros((2, 2)), np.zeros(2), np.ones(2), np.ones(2))
    game = make_env("matrix_game", game="climbing", episode_limit=5)
    with pytest.raises(NotImplementedError, match="MatrixGame.*no per-agent segment report.*labeler=oracle"):
        game.agent_segment_report(np.zeros((2, 2, 6)), np.zeros((2, 2)), np.zeros(2), np.ones(2), np.ones(2))
