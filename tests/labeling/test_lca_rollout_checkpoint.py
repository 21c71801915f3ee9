"""LCA pairs from rollouts of a trained policy (lca.rollout_checkpoint; labeling/lca_pairs.py): seeded items of agents
that acted, the checkpoint's hash in the provenance and the rankings id, refusals (another env, a missing folder,
a source that plays no rollouts)."""
import glob
import hashlib
import logging
import os

import numpy as np
import pytest
import torch as th

from envs import make_env
from helpers import config_args, run_main
from labeling.lca_pairs import locate_rollout_checkpoint, sample_pairs
from run.label import run_label
from shapers.lca.rankings import read_rankings
from utils.config import ConfigError, build_config

TINY = ["runner=episode", "batch_size_run=1", "batch_size=2", "buffer_size=2", "hidden_dim=8", "save_model=True",
        "save_model_interval=100", "use_tensorboard=False", "test_interval=1000", "test_nepisode=1",
        "log_interval=1000", "runner_log_interval=1000", "learner_log_interval=1000"]


def trained_run(tmp_path, env):
    run_main(tmp_path, "ippo", env, "t_max=300", *TINY)
    (run_dir,) = glob.glob(os.path.join(tmp_path, "models", "*"))
    return run_dir


@pytest.fixture(scope="module")
def two_switch_run(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("two_switch"), "two_switch")


def keys(pairs):
    return [(pairs.state[t].tobytes(), pairs.actions[t].tobytes(), pairs.next_state[t].tobytes(), i)
            for t, i in pairs.items]


@pytest.mark.parametrize("source", ["rollouts", "mixed"])
def test_policy_rollouts_are_seeded_real_and_never_stay(two_switch_run, source):
    env, args = make_env("two_switch"), config_args("ippo", "two_switch")
    outer = th.get_rng_state(), np.random.get_state()[1].copy()
    a = sample_pairs(env, "two_switch", source, 120, 5, two_switch_run, run_args=args)
    assert th.equal(th.get_rng_state(), outer[0]) and (np.random.get_state()[1] == outer[1]).all()  # untouched
    b = sample_pairs(env, "two_switch", source, 120, 5, two_switch_run, run_args=args)
    c = sample_pairs(env, "two_switch", source, 120, 6, two_switch_run, run_args=args)
    assert len(a.items) == 120 and len(set(keys(a))) == 120  # count, no duplicate (s, a, s', i)
    assert keys(a) == keys(b) and a.oracle == b.oracle and keys(a) != keys(c)  # seeded
    assert all(a.actions[t][i] != env.stay_action for t, i in a.items) and a.info["stay"] > 0
    latest = max(int(d) for d in os.listdir(two_switch_run) if d.isdigit())
    with open(os.path.join(two_switch_run, str(latest), "agent.th"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    policy = a.info["rollout_policy"]
    assert policy["sha256"] == digest and policy["step"] == latest
    assert policy["checkpoint"] == os.path.abspath(os.path.join(two_switch_run, str(latest)))
    # every transition is real: the env replays s --a--> s'
    for t in range(0, len(a.state), 15):
        env.set_state(a.state[t])
        np.testing.assert_array_equal(np.stack(env.get_obs()), a.obs[t])
        env.step(list(a.actions[t]))
        np.testing.assert_array_equal(env.get_state(), a.next_state[t])
    uniform = sample_pairs(env, "two_switch", source, 120, 5)
    assert uniform.info["rollout_policy"].startswith("uniform") and keys(uniform) != keys(a)


def test_rankings_record_the_checkpoint_and_another_step_is_another_file(tmp_path, two_switch_run):
    def label(checkpoint):
        config = build_config("lca_label", "two_switch", {
            "local_results_path": str(tmp_path / "results"),
            "lca": {"n_pairs": 30, "pair_source": "rollouts", "rollout_checkpoint": checkpoint}})
        return run_label(None, config, logging.getLogger("test_lca"))

    info = label(two_switch_run)
    r = read_rankings(info["path"])
    step_dir = locate_rollout_checkpoint(two_switch_run, "two_switch", config_args("ippo", "two_switch").env_args).path
    digest = r.attrs["settings"]["rollout_checkpoint_sha256"]
    assert r.attrs["pairs"]["rollout_policy"]["sha256"] == digest and len(r) == 30
    assert r.attrs["pairs"]["rollout_policy"]["checkpoint"] == step_dir
    assert label(two_switch_run)["reused"] is True
    earliest = os.path.join(two_switch_run, str(min(int(d) for d in os.listdir(two_switch_run) if d.isdigit())))
    other = label(earliest)
    assert other["path"] != info["path"]
    assert read_rankings(other["path"]).attrs["settings"]["rollout_checkpoint_sha256"] != digest


def test_refusals(tmp_path, two_switch_run):
    env, args = make_env("two_switch"), config_args("ippo", "two_switch")
    matrix_run = trained_run(tmp_path, "matrix_game")
    with pytest.raises(ConfigError, match=r"trained on env 'matrix_game'.*these pairs are of env 'two_switch'"):
        sample_pairs(env, "two_switch", "rollouts", 10, 0, matrix_run, run_args=args)
    with pytest.raises(ConfigError, match=r"lca.rollout_checkpoint='.*nowhere' is not a folder"):
        sample_pairs(env, "two_switch", "rollouts", 10, 0, str(tmp_path / "nowhere"), run_args=args)
    with pytest.raises(ConfigError, match=r"no checkpoints"):
        locate_rollout_checkpoint(str(tmp_path), "two_switch", args.env_args)
    with pytest.raises(ConfigError, match=r"plays rollouts, but lca.pair_source is random_states"):
        sample_pairs(env, "two_switch", "random_states", 10, 0, two_switch_run, run_args=args)
    with pytest.raises(ConfigError, match=r"differing: \['episode_limit'\]"):
        locate_rollout_checkpoint(two_switch_run, "two_switch", {**args.env_args, "episode_limit": 7})
