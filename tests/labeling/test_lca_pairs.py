"""LCA pairs and key steps (labeling/lca_pairs.py) and the yes/no reply parser (labeling.parse.parse_binary_mark)."""
import numpy as np
import pytest

from envs import make_env
from labeling.lca_pairs import (
    PAPER_COUNTS,
    find_keysteps,
    keystep_overrides,
    pair_target,
    resolve_pair_source,
    sample_pairs,
)
from labeling.parse import parse_binary_mark
from utils.config import ConfigError

PARSE_CASES = [
    # (reply, answer or None, how)
    ("[1]", 1, "marker"),
    ("[0]", 0, "marker"),
    ("The ego agent moves closer to Switch1.\n[1]", 1, "marker"),
    ("It moves away.\n[ 0 ]", 0, "marker"),
    ("[1]\nOn second thought it moves away from the switch.\n[0]", 0, "marker"),  # the last clear mark wins
    ("<think>surely [0]</think>\nIt helps.\n[1]", 1, "marker"),  # reasoning blocks dropped
    ("<think>it is [1] because", None, "empty"),  # cut inside the block
    ("The answer is Yes.", 1, "answer is"),
    ("Let's think step by step. ... So the answer is no", 0, "answer is"),
    ("The answer is yes. Wait, the answer is: No.", 0, "answer is"),
    ("［１］", 1, "marker"),  # full-width (NFKC)
    ("[0] or [1]", None, "both 0 and 1"),  # both marks on the deciding line
    ("It helps [1]\nor maybe not [0] [1]", None, "both 0 and 1"),
    ("", None, "empty"),
    ("  \n ", None, "empty"),
    ("asdf qwer [2] #1", None, "no answer"),  # garbage: [2] is no mark
    ("I'm sorry, but I can't help with that.", None, "no answer"),  # a refusal
    ("yes", None, "no answer"),  # a bare yes is not the documented format
    (None, None, "not text"),
]


@pytest.mark.parametrize("text, value, how", PARSE_CASES)
def test_parse_binary_mark(text, value, how):
    p = parse_binary_mark(text)
    assert (p.value, p.how) == (value, how)


@pytest.fixture(scope="module")
def two_switch():
    return make_env("two_switch")


def keys(pairs):
    return [(pairs.state[t].tobytes(), pairs.actions[t].tobytes(), pairs.next_state[t].tobytes(), i)
            for t, i in pairs.items]


@pytest.mark.parametrize("source", ["random_states", "rollouts", "mixed"])
def test_items_are_seeded_distinct_and_never_stay(two_switch, source):
    a = sample_pairs(two_switch, "two_switch", source, 150, pair_seed=3)
    b = sample_pairs(two_switch, "two_switch", source, 150, pair_seed=3)
    c = sample_pairs(two_switch, "two_switch", source, 150, pair_seed=4)
    assert len(a.items) == 150 and len(set(keys(a))) == 150  # count and no duplicate (s, a, s', i)
    assert [a.item_id(k) for k in range(150)] == [b.item_id(k) for k in range(150)]
    assert keys(a) == keys(b) and a.oracle == b.oracle  # same seed, same items
    assert keys(a) != keys(c)
    assert all(a.actions[t][i] != two_switch.stay_action for t, i in a.items)  # only agents that acted
    assert a.item_id(0) == "pair:00000:a%d" % a.items[0][1]
    assert a.info["pair_source"] == source and a.info["stay"] > 0
    # every stored transition is real: the env replays s --a--> s'
    for t in range(0, len(a.state), 25):
        two_switch.set_state(a.state[t])
        np.testing.assert_array_equal(np.stack(two_switch.get_obs()), a.obs[t])
        two_switch.step(list(a.actions[t]))
        np.testing.assert_array_equal(two_switch.get_state(), a.next_state[t])
    for k in range(0, 150, 10):
        t, i = a.items[k]
        assert a.oracle[k] == two_switch.pair_oracle(a.state[t], a.actions[t], a.next_state[t], i)


def test_paper_counts_per_agent_for_victim_rubble():
    assert PAPER_COUNTS["victim_rubble"] == ("per_agent", 2000) and pair_target(None, "two_switch") == ("total", 4400)
    env = make_env("victim_rubble")
    import labeling.lca_pairs as lp
    old = dict(lp.PAPER_COUNTS)
    lp.PAPER_COUNTS["victim_rubble"] = ("per_agent", 60)  # the same rule at a test's size
    try:
        pairs = sample_pairs(env, "victim_rubble", "random_states", None, pair_seed=0)
    finally:
        lp.PAPER_COUNTS.update(old)
    assert pairs.info["items_per_agent"] == [60, 60] and len(pairs.items) == 120
    assert pairs.info["agent_full"] > 0 or sorted(i for _, i in pairs.items).count(0) == 60


def test_target_and_source_errors(two_switch):
    with pytest.raises(ConfigError, match="lca.n_pairs is null.*set lca.n_pairs"):
        pair_target(None, "lbf")
    with pytest.raises(ConfigError, match="lca.n_pairs must be a whole number"):
        pair_target(0, "two_switch")
    with pytest.raises(ConfigError, match="lca.pair_source must be one of"):
        resolve_pair_source("random", two_switch)
    assert resolve_pair_source("auto", two_switch) == "random_states"
    with pytest.raises(ConfigError, match="lca.rollout_checkpoint='results/models/x' is not a folder"):
        sample_pairs(two_switch, "two_switch", "rollouts", 5, 0, rollout_checkpoint="results/models/x",
                     run_args=type("Args", (), {"env_args": {}})())

    class NoStay:
        n_agents = 2
    with pytest.raises(ConfigError, match="NoStay has no stay_action"):
        sample_pairs(NoStay(), "two_switch", "rollouts", 5, 0)
    with pytest.raises(ConfigError, match="has no sample_state, which lca.pair_source=random_states needs"):
        resolve_pair_source("random_states", NoStay())
    assert resolve_pair_source("auto", NoStay()) == "rollouts"


def test_keysteps_random_and_oracle_and_the_cap_error():
    over = keystep_overrides({"episode_limit": 100, "step_penalty": "on_success", "individual_reward": True}, 5000)
    assert over == {"episode_limit": 5000, "step_penalty": "none", "individual_reward": False}
    assert keystep_overrides({"max_cycles": 125, "time_penalty": -0.1, "reward": "dense"}, 9) == \
        {"max_cycles": 9, "time_penalty": 0.0, "reward": "sparse"}
    env = make_env("two_switch", **keystep_overrides({"episode_limit": 1, "step_penalty": 1}, 20000))
    text = find_keysteps(env, "random", 20000, seed=0)
    steps = text.split("\n\n")  # arriving home and success fire at the same step
    assert len(steps) == 3 and steps[0].startswith("Key step 1 (step ") and "switches_triggered 0 -> 1" in steps[0]
    assert "switches_triggered 1 -> 2, door_open 0 -> 1" in steps[1] and "Door: " in steps[1]
    assert "success 0 -> 1" in steps[2] and "y=" not in text  # no partial map rows
    assert find_keysteps(env, "random", 20000, seed=0) == text  # seeded
    oracle = find_keysteps(env, "oracle", 20000, seed=0)
    assert 2 <= oracle.count("Key step") <= 3
    assert int(oracle.split("(step ")[-1].split(",")[0]) < 40  # the greedy policy is quick
    with pytest.raises(ValueError, match=r"lca.keystep_max_steps=3 steps.*lca.keystep_policy=oracle.*"
                                         r"lca.keysteps_file"):
        find_keysteps(make_env("two_switch", episode_limit=3, step_penalty="none"), "random", 3, seed=0)


class HazardWalk:
    """One agent walks right: step 2 costs the team -1 (a hazard), step 4 pays +1 and ends the episode."""
    n_agents = 1

    def seed(self, seed):
        pass

    def reset(self):
        self.t = 0

    def describe_state(self):
        return f"Walker: x={self.t}"

    def get_avail_agent_actions(self, i):
        return [1]

    def step(self, actions):
        self.t += 1
        return {2: -1.0, 4: 1.0}.get(self.t, 0.0), self.t == 4, {}


def test_keysteps_keep_negative_team_rewards_as_states_to_avoid():
    # §4.1: r > 0 marks a landmark of the task, r < 0 a state to avoid; both are key steps, in order
    text = find_keysteps(HazardWalk(), "random", 10, seed=0)
    assert text.split("\n\n") == ["Key step 1 (step 2, team reward -1; a state to avoid):\nWalker: x=2",
                                  "Key step 2 (step 4, team reward +1):\nWalker: x=4"]


def test_pistonball_rollouts_report_ball_coverage():
    env = make_env("pistonball")
    assert resolve_pair_source("auto", env) == "rollouts"  # no sample_state
    pairs = sample_pairs(env, "pistonball", "rollouts", 60, pair_seed=0)
    cov = pairs.info["coverage"]
    assert len(pairs.items) == 60 and cov["field"] == "ball_x" and sum(cov["counts"]) == len(pairs.state)
    assert 0 < cov["visited_fraction"] <= 1 and cov["min"] <= cov["max"]
    assert all(pairs.actions[t][i] != 1 for t, i in pairs.items)  # Pistonball's stay is 1


class TwoCells:
    """One agent on two cells: only two distinct (s, a, s', agent) items exist (a move from each cell)."""
    n_agents, stay_action = 1, 0

    def __init__(self):
        self.cell = 0

    def sample_state(self, rng):
        return np.array([rng.integers(2)], dtype=np.float32)

    def set_state(self, state):
        self.cell = int(state[0])

    def get_state(self):
        return np.array([self.cell], dtype=np.float32)

    def get_obs(self):
        return [self.get_state()]

    def get_avail_agent_actions(self, i):
        return [1, 1]

    def step(self, actions):
        self.cell = 1 - self.cell if actions[0] else self.cell
        return 0.0, False, {}

    def pair_oracle(self, s, a, s2, i):
        return "better"

    def state_schema(self):
        raise NotImplementedError


def test_sampling_says_its_progress_and_stops_when_no_new_item_comes(monkeypatch):
    """A huge lca.n_pairs on a source with few distinct items stops after STALL_TRANSITIONS transitions without a
    new one (not after 50x the wanted count), naming the count reached; progress is logged while it samples."""
    import labeling.lca_pairs as lp

    monkeypatch.setattr(lp, "PROGRESS_LOG_S", 0.0)
    lines = []
    pairs = sample_pairs(TwoCells(), "two_cells", "random_states", 2, pair_seed=0, log=lines.append)
    assert len(pairs.items) == 2 and lines and lines[0].startswith("lca pairs: 0 / 2 items from 0 transitions")
    monkeypatch.setattr(lp, "STALL_TRANSITIONS", 200)
    with pytest.raises(ConfigError, match=r"only 2 distinct \(pair, agent\) items after \d+ transitions from "
                                          r"random_states \(wanted 1000000; none new in the last 200 transitions: "
                                          r"the source has about that many distinct items\); lower lca.n_pairs \(at "
                                          r"most 2 here\)"):
        sample_pairs(TwoCells(), "two_cells", "random_states", 1_000_000, pair_seed=0)
