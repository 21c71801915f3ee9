"""Dataset collection (run: collect) and the behaviour controller.

Behaviour runs are fabricated: checkpoints of networks that always prefer one action per agent, so the greedy
return of each checkpoint on the climbing game is known exactly (payoff of the joint action x 25 steps).
"""
import copy
import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch as th

from components.episode_buffer import EpisodeBatch
from controllers.behaviour_mac import RANDOM, BehaviourMAC
from helpers import FakeSacredRun, make_ctx, run_main, sacred_dir, write_random_dataset
from offline import DatasetError, OfflineDataset
from offline.collection import episode_plan, quality_gaps, select_qualities
from run.collect import run_collect
from run.setup import episode_scheme
from runners.episode_runner import EpisodeRunner
from utils.checkpoint import save_checkpoint, save_run_config
from utils.config import ConfigError, build_config

# climbing payoffs: (0, 1) -30, (0, 2) 0, (2, 2) 5, (0, 0) 11 per step, 25 steps
STEPS = {100: (0, 1), 200: (0, 2), 300: (2, 2), 400: (0, 0)}
RETURN = {100: -750.0, 200: 0.0, 300: 125.0, 400: 275.0}
FRACTIONS = {"medium": 0.45, "poor": 0.05}
LOG = logging.getLogger("test")


def set_constant_policy(mac, actions):
    """Agent i's output peaks at actions[i], whatever it observes."""
    with th.no_grad():
        for p in mac.agent.parameters():
            p.zero_()
        nets = getattr(mac.agent, "agents", None)
        if nets is not None:  # non-shared: one network per agent
            for net, a in zip(nets, actions):
                net.fc2.bias[a] = 1.0
            return
        # shared: hidden unit i is driven by agent i's id input and votes for that agent's action
        net, id0 = mac.agent, mac.input_shape - mac.n_agents
        for i, a in enumerate(actions):
            net.fc1.weight[i, id0 + i] = 1.0
            net.rnn.weight[i, i] = 1.0
            net.fc2.weight[a, i] = 1.0


def write_behaviour_run(folder, alg="qmix", env_config="climbing", steps=STEPS, **overrides):
    ctx = make_ctx(alg, env_config, use_rnn=False, runner="episode", batch_size_run=1, **overrides)
    run_dir = os.path.join(folder, "models", "run")
    for step, actions in steps.items():
        set_constant_policy(ctx.mac, actions)
        save_checkpoint(ctx.learner, os.path.join(run_dir, str(step)), {"t_env": step})
    save_run_config(run_dir, ctx.config)
    ctx.runner.close_env()
    return run_dir


@pytest.fixture(scope="module")
def behaviour_run(tmp_path_factory):
    return write_behaviour_run(str(tmp_path_factory.mktemp("behaviour")))


def collect_config(tmp_path, run_dir, datasets, **overrides):
    settings = dict(behaviour_checkpoint=run_dir, dataset_dir=str(tmp_path / "data"), runner="episode",
                    batch_size_run=1, collect_eval_episodes=8, use_tensorboard=False, seed=5)
    settings.update(overrides)
    config = build_config("collect", "climbing", settings)
    config["collect_datasets"] = datasets
    config["quality_fractions"] = dict(FRACTIONS)
    config["env_args"]["seed"] = config["seed"]
    return config


def collect(tmp_path, run_dir, datasets, **overrides):
    run = FakeSacredRun()
    run_collect(run, collect_config(tmp_path, run_dir, datasets, **overrides), LOG)
    return run


@pytest.fixture
def recorded(monkeypatch):
    """Episode batches the episode runner produced while collecting (test-mode scoring episodes excluded)."""
    batches, original = [], EpisodeRunner.run

    def run(self, test_mode=False):
        batch = original(self, test_mode=test_mode)
        if not test_mode:
            batches.append(batch)
        return batch

    monkeypatch.setattr(EpisodeRunner, "run", run)
    return batches


# ----- pure pieces -----
def test_quality_selection_on_fabricated_scores():
    # negative returns (MPE-like): random -100, expert 0; normalised -0.2, 0.4, 0.8, 0.3, 1.0
    scores = {"random": -100.0, "10": -120.0, "20": -60.0, "30": -20.0, "40": -70.0, "50": 0.0}
    chosen, normalised = select_qualities(scores, {"medium": 0.5, "poor": 0.15, "good": 0.8})
    assert chosen == {"random": "random", "expert": "50", "poor": "20", "medium": "30", "good": "30"}
    assert normalised["10"] == pytest.approx(-0.2) and normalised["50"] == 1.0
    # a checkpoint above the final one (climbing: a lucky initialisation) is no lower-quality policy
    chosen, _ = select_qualities({"random": -88.0, "25": 275.0, "1025": 0.0, "2025": 125.0}, {"poor": 0.15})
    assert chosen["poor"] == "1025"
    with pytest.raises(ValueError, match="does not beat the random policy"):
        select_qualities({"random": 5.0, "10": 7.0, "20": 5.0}, {"medium": 0.5})


def test_sparse_checkpoints_are_reported():
    """MPE spread's recipe: the first checkpoint after the untrained one already scores 0.72, so poor (0.15) and
    medium (0.5) are both that policy; the collection says so and names the fix."""
    scores = {"random": -148.5, "250": -152.3, "100250": -116.0, "200250": -113.2, "1500250": -103.1}
    fractions = {"medium": 0.5, "poor": 0.15}
    chosen, normalised = select_qualities(scores, fractions)
    messages = quality_gaps(chosen, normalised, fractions)
    assert len(messages) == 3
    assert messages[0].startswith("quality 'poor' (fraction 0.15) is the checkpoint at step 100250, normalised 0.7")
    assert "the one before, step 250, scores -0.084" in messages[0] and "save_model_interval" in messages[0]
    assert messages[2] == ("qualities medium, poor are one policy (checkpoint 100250): their datasets differ only by "
                           "their episodes")
    # checkpoints close to each fraction: nothing to report
    dense = {"random": 0.0, "10": 0.2, "20": 0.55, "30": 1.0}
    assert quality_gaps(*select_qualities(dense, fractions), fractions) == []


def test_episode_plan_mixture_counts_shuffle_and_n_expert():
    rng = np.random.default_rng(0)
    qualities = {"random", "expert", "poor"}
    plan = episode_plan("mix", [{"episodes": 20, "agents": "expert"}, {"episodes": 100, "agents": "poor"}], 3,
                        qualities, rng)
    assert len(plan) == 120 and sum(row == ["expert"] * 3 for row in plan) == 20
    assert sum(row == ["poor"] * 3 for row in plan) == 100
    assert [row[0] for row in plan[:20]] != ["expert"] * 20  # shuffled, not in part order
    plan = episode_plan("two", [{"episodes": 200, "agents": {"expert": 2, "rest": "random"}}], 4, qualities, rng)
    experts = np.array([[q == "expert" for q in row] for row in plan])
    assert (experts.sum(1) == 2).all() and set(np.array(plan)[~experts]) == {"random"}
    assert (experts.mean(0) > 0.35).all()  # every agent is drawn (expected 0.5)
    assert episode_plan("per_agent", {"episodes": 2, "agents": ["expert", "poor", "random"]}, 3, qualities,
                        rng) == [["expert", "poor", "random"]] * 2
    for spec, match in [({"expert": 4, "rest": "random"}, "asks for 4 agents"), ("medium", "unknown qualities"),
                        (["expert", "poor"], "names 2 agents")]:
        with pytest.raises(ValueError, match=match):
            episode_plan("bad", [{"episodes": 1, "agents": spec}], 3, qualities, rng)


# ----- the behaviour controller -----
def constant_mac(ctx, actions):
    mac = copy.deepcopy(ctx.mac)
    set_constant_policy(mac, actions)
    return mac


def rows_batch(ctx, n_rows):
    """An episode batch of n_rows envs at t=0 with the countdown env's availability (agent 1 cannot take 0)."""
    scheme, groups, preprocess = episode_scheme(ctx.runner.get_env_info())
    batch = EpisodeBatch(scheme, groups, n_rows, ctx.args.episode_limit + 1, preprocess=preprocess)
    env = ctx.runner.env
    batch.update({"obs": [env.get_obs()] * n_rows, "state": [env.get_state()] * n_rows,
                  "avail_actions": [env.get_avail_actions()] * n_rows}, ts=0)
    return batch


@pytest.mark.parametrize("alg", ["qmix", "mappo_ns"])
def test_behaviour_mac_obeys_assignment_and_availability(alg):
    ctx = make_ctx(alg, "climbing", env="countdown", env_args={"episode_limit": 6, "n_actions": 4},
                   runner="episode", batch_size_run=1, use_rnn=False)
    # both policies prefer action 0 for agent 1, which is unavailable to it
    policies = {"a": constant_mac(ctx, (3, 0)), "b": constant_mac(ctx, (1, 0))}
    mac = BehaviourMAC(policies)
    mac.set_assignment([["a", "b"], ["b", "a"], ["random", "b"], ["a", "random"]])
    batch = rows_batch(ctx, 4)
    mac.init_hidden(4)
    actions = mac.select_actions(batch, 0, 0, bs=[0, 1, 3])  # the parallel runner's still-running rows
    assert actions.shape == (3, 2) and actions[:2, 0].tolist() == [3, 1] and actions[2, 0] == 3
    # agent 1's greedy choice is its best available action (the zero-weight actions tie: the first, 1)
    assert actions[:2, 1].tolist() == [1, 1]

    # sampling, epsilon and the random policy never take an unavailable action, and random covers the rest
    for greedy, epsilon in [(True, 1.0), (False, 0.0)]:
        mac = BehaviourMAC(policies, greedy=greedy, epsilon=epsilon, policy_t_env={"a": 100, "b": 100})
        seen = np.zeros((2, 4), int)
        for i in range(200):
            mac.set_assignment([["a", "b"] if i % 2 else [RANDOM, RANDOM]])
            mac.init_hidden(1)
            a = mac.select_actions(batch[:1], 0, 0).numpy()[0]
            seen[[0, 1], a] += 1
        assert seen[1, 0] == 0 and (seen[1, 1:] > 0).all() and (seen[0] > 0).all()
    with pytest.raises(ValueError, match="unknown policies"):
        mac.set_assignment([["a", "expert"]])
    ctx.runner.close_env()


# ----- collection -----
def test_collect_qualities_round_trip_and_returns(tmp_path, behaviour_run, recorded):
    datasets = {"mix": [{"episodes": 3, "agents": "expert"}, {"episodes": 5, "agents": "poor"}],
                "imbalanced": [{"episodes": 10, "agents": {"expert": 1, "rest": "random"}}],
                "expert_2": [{"episodes": 2, "agents": {"expert": 2, "rest": "random"}}],
                "medium": [{"episodes": 1, "agents": "medium"}]}
    run = collect(tmp_path, behaviour_run, datasets)
    assert {q: v["policy"] for q, v in run.info["behaviour"].items()} == {
        "random": "random", "expert": "400", "medium": "300", "poor": "200"}
    data = tmp_path / "data"
    scores = json.load(open(data / "behaviour.json"))["scores"]
    assert {k: v["mean"] for k, v in scores.items() if k != "random"} == {str(s): r for s, r in RETURN.items()}

    mix = OfflineDataset.load(data / "mix.h5")
    q = mix.qualities
    assert sorted(tuple(r) for r in q) == [("expert", "expert")] * 3 + [("poor", "poor")] * 5
    assert list(q[:3, 0]) != ["expert"] * 3  # shuffled
    np.testing.assert_array_equal(mix.returns, np.where(q[:, 0] == "expert", RETURN[400], RETURN[200]))

    imb = OfflineDataset.load(data / "imbalanced.h5")
    is_expert = imb.qualities == "expert"
    assert (is_expert.sum(1) == 1).all() and set(imb.qualities[~is_expert]) == {"random"}
    assert is_expert[:, 0].any() and is_expert[:, 1].any()  # the expert agent varies
    arr = imb.arrays()
    steps = arr["filled"][..., 0].astype(bool)
    expert_actions = arr["actions"][..., 0][np.repeat(is_expert[:, None], steps.shape[1], 1) & steps[..., None]]
    assert (expert_actions == 0).all()  # the expert checkpoint plays (0, 0)
    random_actions = arr["actions"][..., 0][np.repeat(~is_expert[:, None], steps.shape[1], 1) & steps[..., None]]
    assert set(random_actions.tolist()) == {0, 1, 2}

    assert (OfflineDataset.load(data / "expert_2.h5").returns == RETURN[400]).all()
    assert (OfflineDataset.load(data / "medium.h5").returns == RETURN[300]).all()

    # round trip: what the runner produced is what reads back, in collection order
    offset = 0
    for name, n in [("mix", 8), ("imbalanced", 10), ("expert_2", 2), ("medium", 1)]:
        ds = OfflineDataset.load(data / f"{name}.h5").arrays()
        for i, batch in enumerate(recorded[offset:offset + n]):
            for key in ("obs", "state", "actions", "avail_actions", "reward", "terminated", "filled"):
                np.testing.assert_array_equal(ds[key][i], batch[key][0].numpy(), err_msg=f"{name}[{i}].{key}")
            assert ds["episode_return"][i] == batch["reward"].sum()
        offset += n
    assert offset == len(recorded)

    rows = json.load(open(data / "returns.json"))["datasets"]
    assert [r["dataset"] for r in rows] == list(datasets) and run.info["collect_returns"] == rows
    assert rows[0]["composition"] == "3 expert + 5 poor" and rows[0]["episodes"] == 8
    assert rows[2]["return_mean"] == RETURN[400]
    assert "| imbalanced | 10 |" in (data / "returns.md").read_text()
    # each dataset records its behaviour policies
    config = json.loads(mix.attrs["config"])
    assert config["behaviour"]["expert"]["checkpoint"].endswith(os.path.join("run", "400"))
    assert config["dataset_parts"] == datasets["mix"]


@pytest.mark.parametrize("alg", ["mappo", "qmix_ns", "ippo_ns"])
def test_policy_and_non_shared_checkpoints(tmp_path, alg):
    run_dir = write_behaviour_run(str(tmp_path), alg)
    collect(tmp_path, run_dir, {"e": [{"episodes": 2, "agents": "expert"}],
                                "m": [{"episodes": 1, "agents": ["medium", "poor"]}]})
    assert (OfflineDataset.load(tmp_path / "data" / "e.h5").returns == RETURN[400]).all()
    # agent 0 as at step 300 (action 2), agent 1 as at step 200 (action 2): payoff 5
    assert (OfflineDataset.load(tmp_path / "data" / "m.h5").returns == RETURN[300]).all()


def test_parallel_rows_carry_their_own_assignment(tmp_path, behaviour_run):
    # 7 episodes on 3 envs: the last batch is padded and its extra episodes dropped
    collect(tmp_path, behaviour_run, {"imb": [{"episodes": 7, "agents": {"expert": 1, "rest": "random"}}]},
            runner="parallel", batch_size_run=3, n_workers=1, collect_eval_episodes=3)
    ds = OfflineDataset.load(tmp_path / "data" / "imb.h5")
    assert len(ds) == 7
    arr, is_expert = ds.arrays(), ds.qualities == "expert"
    assert (is_expert.sum(1) == 1).all() and is_expert[:, 0].any() and is_expert[:, 1].any()
    for e in range(7):
        L = int(arr["filled"][e].sum())
        agent = int(np.flatnonzero(is_expert[e])[0])
        assert (arr["actions"][e, :L, agent, 0] == 0).all()


def test_interrupted_collection_leaves_no_file_then_resumes(tmp_path, behaviour_run, monkeypatch):
    datasets = {"first": [{"episodes": 2, "agents": "expert"}], "second": [{"episodes": 6, "agents": "poor"}]}
    original, calls, scored, armed = EpisodeRunner.run, [], [], [True]

    def failing(self, test_mode=False):
        if test_mode:
            scored.append(1)
        else:
            calls.append(1)
            if len(calls) == 5 and armed:  # the third episode of "second"
                armed.clear()
                raise RuntimeError("injected failure")
        return original(self, test_mode=test_mode)

    monkeypatch.setattr(EpisodeRunner, "run", failing)
    with pytest.raises(RuntimeError, match="injected"):
        collect(tmp_path, behaviour_run, datasets)
    data = tmp_path / "data"
    assert not (data / "second.h5").exists() and not glob.glob(str(data / "*.tmp"))
    first = (data / "first.h5").stat().st_mtime_ns

    calls.clear()
    scored.clear()
    run = collect(tmp_path, behaviour_run, datasets)  # resumes: "first" is kept, scores come from behaviour.json
    assert len(calls) == 6 and not scored and (data / "first.h5").stat().st_mtime_ns == first
    assert [r["episodes"] for r in run.info["collect_returns"]] == [2, 6]

    calls.clear()
    collect(tmp_path, behaviour_run, datasets)
    assert calls == [] and (data / "first.h5").stat().st_mtime_ns == first
    collect(tmp_path, behaviour_run, {"first": datasets["first"]}, collect_overwrite=True)
    assert len(calls) == 2 and (data / "first.h5").stat().st_mtime_ns != first
    # rows of datasets from earlier invocations stay in the table
    assert [r["dataset"] for r in json.load(open(data / "returns.json"))["datasets"]] == ["first", "second"]


def test_clear_errors(tmp_path, behaviour_run):
    tiny = {"t": [{"episodes": 1, "agents": "expert"}]}
    with pytest.raises(ValueError, match="episode_limit"):
        collect(tmp_path, behaviour_run, tiny, env_args={"episode_limit": 10})
    no_config = tmp_path / "old"
    shutil.copytree(behaviour_run, no_config)
    os.remove(no_config / "config.json")
    with pytest.raises(ConfigError, match="checkpoint written before configs were saved"):
        collect(tmp_path, str(no_config), tiny)
    with pytest.raises(ConfigError, match=r"one checkpoint \(step 400\) of the run .*pass the run folder, "
                                          r"behaviour_checkpoint=.*run \("):
        collect(tmp_path, os.path.join(behaviour_run, "400"), tiny)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(os.path.join(behaviour_run, "config.json"), empty)
    with pytest.raises(ConfigError, match="no checkpoints"):
        collect(tmp_path, str(empty), tiny)
    # episode counts are whole numbers; dataset names are file names in dataset_dir
    with pytest.raises(ConfigError, match="episodes must be a whole number >= 1, got 2.5"):
        collect(tmp_path, behaviour_run, {"t": [{"episodes": 2.5, "agents": "expert"}]})
    for name in ("/abs/path", "sub/x", ".."):
        with pytest.raises(ConfigError, match="collect_datasets name"):
            collect(tmp_path, behaviour_run, {name: [{"episodes": 1, "agents": "expert"}]})
    with pytest.raises(ValueError, match="unknown qualities"):
        collect(tmp_path, behaviour_run, {"t": [{"episodes": 1, "agents": "great"}]})
    # a dataset of another env at the target path is not silently kept or replaced
    write_random_dataset(tmp_path / "data" / "t.h5", env_config="penalty", n_episodes=1)
    with pytest.raises(DatasetError, match="env_args\\['game'\\].*collect_overwrite=True"):
        collect(tmp_path, behaviour_run, tiny)


def test_collect_through_main(tmp_path, behaviour_run):
    # collect.yaml's parallel runner (8 envs) and default quality fractions; the default folder is the behaviour
    # run's (results/datasets/<env label>/<behaviour run>/; this run's models folder is named "run")
    run_main(tmp_path, "collect", "climbing", f"behaviour_checkpoint={behaviour_run}",
             'collect_datasets={"tiny": [{"episodes": 3, "agents": "expert"}]}', "collect_only=['tiny']",
             "collect_eval_episodes=8", "use_tensorboard=False", "n_workers=1")
    data = tmp_path / "datasets" / "climbing" / "run"
    ds = OfflineDataset.load(data / "tiny.h5", expect_env="matrix_game")
    assert len(ds) == 3 and (ds.returns == RETURN[400]).all()
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "collect", "climbing"), "info.json")))
    assert [r["dataset"] for r in info["collect_returns"]] == ["tiny"]
    assert os.path.isfile(data / "behaviour.json") and os.path.isfile(data / "returns.md")


def test_scores_describe_the_policies_as_they_collect(tmp_path, behaviour_run):
    """With collect_epsilon, checkpoints are scored with the same random actions their data will have."""
    greedy = collect(tmp_path / "greedy", behaviour_run, {"e": [{"episodes": 2, "agents": "expert"}]})
    noisy = collect(tmp_path / "noisy", behaviour_run, {"e": [{"episodes": 2, "agents": "expert"}]},
                    collect_epsilon=0.2)
    assert greedy.info["behaviour"]["expert"]["return"] == RETURN[400]
    assert noisy.info["behaviour"]["expert"]["return"] < RETURN[400] - 50
    scores = json.load(open(tmp_path / "noisy" / "data" / "behaviour.json"))
    assert scores["key"]["epsilon"] == 0.2


# ----- datasets keyed by their source (issue 12, item 6) -----
def test_small_collection_in_one_command(tmp_path, behaviour_run):
    """collect_episodes scales every collect.yaml dataset: no collect_datasets / collect_only to write."""
    run_main(tmp_path, "collect", "climbing", f"behaviour_checkpoint={behaviour_run}", "collect_episodes=5",
             "collect_eval_episodes=8", "use_tensorboard=False", "n_workers=1")
    data = tmp_path / "datasets" / "climbing" / "run"
    recipe = build_config("collect", "climbing")["collect_datasets"]
    rows = {r["dataset"]: r for r in json.load(open(data / "returns.json"))["datasets"]}
    assert set(rows) == set(recipe) and rows["expert"]["episodes"] == 5
    assert rows["mix_200e_1000p"]["episodes"] == 6 and rows["mix_200e_1000p"]["composition"] == "1 expert + 5 poor"
    assert len(OfflineDataset.load(data / "imbalanced_1e.h5")) == 5
    with pytest.raises(ValueError, match="collect_episodes must be a positive integer"):
        collect(tmp_path, behaviour_run, {"e": [{"episodes": 2, "agents": "expert"}]}, collect_episodes=0)


def test_another_behaviours_data_is_refused(tmp_path, behaviour_run):
    datasets = {"expert": [{"episodes": 2, "agents": "expert"}]}
    collect(tmp_path, behaviour_run, datasets)
    path = tmp_path / "data" / "expert.h5"
    stamp = path.stat().st_mtime_ns
    config = json.loads(OfflineDataset.load(path).attrs["config"])
    assert config["collection"]["policies"]["expert"]["checkpoint"].endswith(os.path.join("run", "400"))
    assert len(config["collection"]["policies"]["expert"]["sha256"]) == 64

    # a moved behaviour run (same checkpoint files) is the same source: kept
    moved = tmp_path / "moved" / "models" / "run"
    shutil.copytree(behaviour_run, moved)
    collect(tmp_path, str(moved), datasets)
    assert path.stat().st_mtime_ns == stamp

    # another behaviour run whose last checkpoint plays (2, 2), collected into the same folder: refused
    other = write_behaviour_run(str(tmp_path / "other"), steps={100: (0, 1), 200: (2, 2)})
    with pytest.raises(DatasetError) as e:
        collect(tmp_path, other, datasets)
    message = str(e.value)
    # found before scoring: the file names another behaviour run
    assert str(path) in message and f"collected from the behaviour run {os.path.realpath(behaviour_run)}" in message \
        and os.path.join("other", "models", "run") in message and "collect_overwrite=True" in message \
        and "dataset_dir=" in message
    assert path.stat().st_mtime_ns == stamp  # neither kept silently nor replaced

    # other settings of the same behaviour: refused too, naming the setting
    with pytest.raises(DatasetError, match="collect_epsilon: the file's is 0.0, requested 0.2"):
        collect(tmp_path, behaviour_run, datasets, collect_epsilon=0.2)
    with pytest.raises(DatasetError, match="dataset_parts: the file's is 2 expert, requested 3 expert"):
        collect(tmp_path, behaviour_run, {"expert": [{"episodes": 3, "agents": "expert"}]})
    # a hand-made file of the right env has no provenance: refused
    write_random_dataset(tmp_path / "data" / "hand.h5", n_episodes=1)
    with pytest.raises(DatasetError, match="records no collection provenance"):
        collect(tmp_path, behaviour_run, {"hand": [{"episodes": 1, "agents": "random"}]})

    # overwriting replaces it; by default each behaviour run has its own folder
    run = collect(tmp_path, other, datasets, collect_overwrite=True)
    assert run.info["behaviour"]["expert"]["return"] == RETURN[300]
    assert (OfflineDataset.load(path).returns == RETURN[300]).all()


def test_returns_table_lists_only_the_behaviour_runs_datasets(tmp_path, behaviour_run):
    collect(tmp_path, behaviour_run, {"a": [{"episodes": 1, "agents": "expert"}]})
    other = write_behaviour_run(str(tmp_path / "other"), steps={100: (0, 1), 200: (2, 2)})
    collect(tmp_path, other, {"b": [{"episodes": 1, "agents": "expert"}]})
    write_random_dataset(tmp_path / "data" / "hand.h5", n_episodes=1)  # unrelated files are never listed
    assert [r["dataset"] for r in json.load(open(tmp_path / "data" / "returns.json"))["datasets"]] == ["b"]
    collect(tmp_path, behaviour_run, {"c": [{"episodes": 1, "agents": "expert"}]})
    assert sorted(r["dataset"] for r in json.load(open(tmp_path / "data" / "returns.json"))["datasets"]) == ["a", "c"]
    assert "| b |" not in (tmp_path / "data" / "returns.md").read_text()


def test_returns_table_keeps_random_data_and_sees_through_symlinks(tmp_path, behaviour_run):
    """A random-only file belongs to every behaviour run (no checkpoint plays in it); the same run reached through a
    symlinked folder (a git worktree sharing results/) is the same run."""
    collect(tmp_path, behaviour_run, {"random": [{"episodes": 1, "agents": "random"}],
                                      "a": [{"episodes": 1, "agents": "expert"}]})
    other = write_behaviour_run(str(tmp_path / "other"), steps={100: (0, 1), 200: (2, 2)})
    collect(tmp_path, other, {"b": [{"episodes": 1, "agents": "expert"}]})
    assert [r["dataset"] for r in json.load(open(tmp_path / "data" / "returns.json"))["datasets"]] == ["random", "b"]
    os.symlink(os.path.dirname(os.path.dirname(behaviour_run)), tmp_path / "linked")
    linked = str(tmp_path / "linked" / "models" / "run")
    collect(tmp_path, linked, {"c": [{"episodes": 1, "agents": "expert"}]})
    collect(tmp_path, linked, {"a": [{"episodes": 1, "agents": "expert"}]})  # the same source: kept, not an error
    from offline.collection import read_provenance
    assert read_provenance(tmp_path / "data" / "c.h5")["behaviour_checkpoint"] == os.path.realpath(behaviour_run)
    assert sorted(r["dataset"] for r in json.load(open(tmp_path / "data" / "returns.json"))["datasets"]) == [
        "a", "c", "random"]


def test_datasets_collected_before_provenance_was_recorded(tmp_path, behaviour_run):
    """Older files have no `collection` attr: their behaviour checkpoint folders and settings are compared."""
    import h5py
    datasets = {"e": [{"episodes": 1, "agents": "expert"}]}
    collect(tmp_path, behaviour_run, datasets)
    path = tmp_path / "data" / "e.h5"
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["config"])
        del config["collection"]
        f.attrs["config"] = json.dumps(config)
    collect(tmp_path, behaviour_run, datasets)  # kept
    moved = tmp_path / "moved" / "models" / "run"
    shutil.copytree(behaviour_run, moved)
    with pytest.raises(DatasetError, match="collected from the behaviour run"):  # no hashes: the folder decides
        collect(tmp_path, str(moved), datasets)


def test_an_unreadable_file_at_a_dataset_path_is_kept_and_named(tmp_path, behaviour_run):
    """The writer renames only complete files into place, so a file there that does not load is foreign or damaged:
    collection stops naming it instead of replacing it (collect_overwrite=True replaces it)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "first.h5").write_bytes(b"not an HDF5 file")
    with pytest.raises(DatasetError, match="first.h5 exists but cannot be read as a dataset.*collect_overwrite=True"):
        collect(tmp_path, behaviour_run, {"first": [{"episodes": 4, "agents": "expert"}]})
    assert (data / "first.h5").read_bytes() == b"not an HDF5 file"


# ----- reruns and refusals before the slow scoring (new-user attack 2) -----
def count_scoring(monkeypatch):
    import offline.collection as collection
    calls, original = [], collection.score

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(collection, "score", counted)
    return calls


def test_a_drawn_seed_scores_on_fixed_episodes_and_the_cache_ignores_the_seed(tmp_path, behaviour_run, monkeypatch):
    """Without a seed (Sacred draws one) the checkpoints are scored on SCORE_SEED's episodes, so rerunning the same
    command chooses the same qualities; cached scores of the same checkpoints and settings are used whatever seed."""
    from offline.collection import SCORE_SEED
    scored = count_scoring(monkeypatch)
    datasets = {"e": [{"episodes": 1, "agents": "expert"}]}
    run = FakeSacredRun()
    run.meta_info = {"config_updates": {"dataset_dir": "..."}}  # no seed among the user's updates
    run_collect(run, collect_config(tmp_path, behaviour_run, datasets, seed=123), LOG)
    key = json.load(open(tmp_path / "data" / "behaviour.json"))["key"]
    assert key["seed"] == SCORE_SEED and len(scored) == 1
    collect(tmp_path, behaviour_run, datasets, seed=77)  # a given seed: the cached scores are of the same policies
    assert len(scored) == 1 and (tmp_path / "data" / "e.h5").exists()


def test_another_runs_files_are_refused_before_scoring_and_its_scores_kept(tmp_path, behaviour_run, monkeypatch):
    datasets = {"expert": [{"episodes": 1, "agents": "expert"}]}
    collect(tmp_path, behaviour_run, datasets)
    scores = tmp_path / "data" / "behaviour.json"
    before = scores.read_text()
    other = write_behaviour_run(str(tmp_path / "other"), steps={100: (0, 1), 200: (2, 2)})
    scored = count_scoring(monkeypatch)
    with pytest.raises(DatasetError, match=r"expert.h5 exists and was collected from the behaviour run .*"
                                           r"Nothing was scored"):
        collect(tmp_path, other, datasets)
    assert not scored and scores.read_text() == before
    # another run collected into the same folder (other datasets): both runs' scores stay in behaviour.json
    collect(tmp_path, other, {"b": [{"episodes": 1, "agents": "expert"}]})
    assert len(scored) == 1
    collect(tmp_path, behaviour_run, datasets)  # its scores are still cached: no scoring
    assert len(scored) == 1
    # an env mismatch is found before scoring too
    write_random_dataset(tmp_path / "data" / "pen.h5", env_config="penalty", n_episodes=1)
    with pytest.raises(DatasetError, match="collect_overwrite=True"):
        collect(tmp_path, behaviour_run, {"pen": [{"episodes": 1, "agents": "expert"}]})
    assert len(scored) == 1


def test_overwrite_refuses_a_file_holding_labels(tmp_path, behaviour_run):
    import h5py
    datasets = {"e": [{"episodes": 2, "agents": "expert"}]}
    collect(tmp_path, behaviour_run, datasets)
    path = tmp_path / "data" / "e.h5"
    with h5py.File(path, "r+") as f:
        f.create_group("preferences/mine")
        f.create_dataset("labels/x", data=np.zeros(2))
    stamp = path.stat().st_mtime_ns
    with pytest.raises(DatasetError, match=r"holds preferences/mine, labels/x .*move the file away"):
        collect(tmp_path, behaviour_run, datasets, collect_overwrite=True)
    assert path.stat().st_mtime_ns == stamp


def test_corrupt_caches_are_rebuilt_with_a_warning(tmp_path, behaviour_run, caplog):
    datasets = {"e": [{"episodes": 1, "agents": "expert"}]}
    collect(tmp_path, behaviour_run, datasets)
    (tmp_path / "data" / "behaviour.json").write_text("{not json")
    (tmp_path / "data" / "returns.json").write_text("[")
    with caplog.at_level(logging.WARNING):
        run = collect(tmp_path, behaviour_run, datasets)
    assert "behaviour.json cannot be read" in caplog.text and "returns.json cannot be read" in caplog.text
    assert [r["dataset"] for r in run.info["collect_returns"]] == ["e"]
    assert json.load(open(tmp_path / "data" / "behaviour.json"))["scores"]


def test_a_stopped_collection_says_what_is_kept_and_how_to_go_on(tmp_path, behaviour_run, monkeypatch, caplog):
    """SIGTERM (Terminated) or Ctrl-C while a dataset is written: the log names the datasets kept and the rerun."""
    from utils.signals import Terminated

    datasets = {"first": [{"episodes": 2, "agents": "expert"}], "second": [{"episodes": 4, "agents": "poor"}]}
    original, calls = EpisodeRunner.run, []

    def stopped(self, test_mode=False):
        if not test_mode:
            calls.append(1)
            if len(calls) == 4:  # the second episode of "second"
                raise Terminated()
        return original(self, test_mode=test_mode)

    monkeypatch.setattr(EpisodeRunner, "run", stopped)
    with caplog.at_level(logging.WARNING), pytest.raises(Terminated):
        collect(tmp_path, behaviour_run, datasets)
    data = tmp_path / "data"
    assert not (data / "second.h5").exists() and (data / "first.h5").exists()
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"collection stopped by SIGTERM while writing second: {data / 'second.h5'} was not written" in message
    assert f"Kept in {data}: first, and the behaviour scores. Rerun the same command" in message
