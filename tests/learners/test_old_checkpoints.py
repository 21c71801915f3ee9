"""Checkpoints written by the code before issue 11 (tests/data/checkpoints_before_issue11, see its README) still
load: every learner file re-saved after loading equals the stored one (parameters, target networks, optimisers,
learner state), an evaluate load restores the actor only, a train step runs, and main resumes each run."""
import os
import shutil

import pytest
import torch as th

from helpers import make_ctx, run_main, write_random_dataset
from utils.checkpoint import RUN_STATE, find_checkpoint, load_file

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "data", "checkpoints_before_issue11")
TINY = dict(hidden_dim=8, seed=3, env_args={"episode_limit": 5})
# alg: (env config, the settings it was written with beyond TINY, its t_env or gradient step)
RUNS = {
    "qmix": ("matrix_game", dict(batch_size=2, buffer_size=4, mixing_embed_dim=4, hypernet_embed=8,
                                 standardise_rewards=True), 65),
    "mappo": ("matrix_game", dict(batch_size=2, batch_size_run=1, runner="episode", use_value_norm=True,
                                  standardise_rewards=True), 45),
    "mappo_ns": ("matrix_game", dict(batch_size=2, batch_size_run=1, runner="episode"), 45),
    "bc_beta": ("climbing", dict(batch_size=2, offline_expert="quality:random"), 4),
    "omar": ("climbing", dict(batch_size=2, critic_hidden_dim=8), 4),
    "omiga": ("climbing", dict(batch_size=2, critic_hidden_dim=8, mixing_embed_dim=4), 4),
}


def equal(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if th.is_tensor(a):
        return th.is_tensor(b) and a.dtype == b.dtype and th.equal(a, b)
    return a == b


def as_parallel_mlp(name, state):
    """What a non-shared critic's files hold since issue 11: its AgentwiseMLP (net.fc{k}.weight, net.fc{k}.bias
    [n, out]) as a ParallelMLP (net.weights.{k-1}, net.biases.{k-1} [n, 1, out]), the critic optimiser's
    per-parameter lists in that parameter order (all weights, then all biases)."""
    if name == "critic.th":
        weights = {f"net.weights.{k}": state[f"net.fc{k + 1}.weight"] for k in range(3)}
        return {**weights, **{f"net.biases.{k}": state[f"net.fc{k + 1}.bias"].unsqueeze(1) for k in range(3)}}
    if name == "critic_opt.th":
        def reorder(v):  # fc1.weight, fc1.bias, fc2.weight, ... -> weights, then biases
            return v[0::2] + [b.unsqueeze(1) for b in v[1::2]]
        return {k: reorder(v) if isinstance(v, list) else v for k, v in state.items()}
    return state


def fixture(alg):
    return os.path.join(FIXTURES, alg, str(RUNS[alg][2]))


def learner_ctx(alg):
    env, settings, _ = RUNS[alg]
    th.manual_seed(1)  # other initial weights than the stored ones
    return make_ctx(alg, env, **TINY, **settings)


def train_step(ctx):
    batch = ctx.runner.run(test_mode=False)
    if ctx.learner.offline:
        return ctx.learner.train({name: batch for name in ctx.learner.batches}, 0, 0)
    return ctx.learner.train(batch, ctx.runner.t_env, 0)


@pytest.mark.parametrize("alg", RUNS)
def test_old_checkpoint_loads_whole_and_trains(tmp_path, alg):
    ctx = learner_ctx(alg)
    ctx.learner.load_models(fixture(alg))
    ctx.learner.save_models(str(tmp_path))
    stored = sorted(f for f in os.listdir(fixture(alg)) if f != RUN_STATE)
    assert sorted(os.listdir(tmp_path)) == stored
    for name in stored:
        old = load_file(os.path.join(fixture(alg), name))
        if alg == "mappo_ns":
            old = as_parallel_mlp(name, old)
        assert equal(load_file(os.path.join(tmp_path, name)), old), name
    train_step(ctx)


@pytest.mark.parametrize("alg", RUNS)
def test_old_checkpoint_loads_the_actor_for_evaluation(alg):
    ctx = learner_ctx(alg)
    ctx.learner.load_models(fixture(alg), evaluate=True)
    assert equal(ctx.mac.agent.state_dict(), load_file(os.path.join(fixture(alg), "agent.th")))


@pytest.fixture(scope="module")
def climbing_data(tmp_path_factory):
    return write_random_dataset(str(tmp_path_factory.mktemp("data") / "climbing.h5"), "climbing", 6,
                                env_args={"episode_limit": 5})[0]


@pytest.mark.parametrize("alg", RUNS)
def test_main_resumes_an_old_checkpoint(tmp_path, alg, climbing_data):
    env, _, step = RUNS[alg]
    run = tmp_path / "old"
    shutil.copytree(os.path.join(FIXTURES, alg), run)
    common = ["hidden_dim=8", "env_args.episode_limit=5", "use_tensorboard=False", f"checkpoint_path={run}"]
    common += [f"{k}={v}" for k, v in RUNS[alg][1].items()]
    if env == "climbing":
        common += [f"offline_dataset={climbing_data}", f"offline_steps={step + 2}", "offline_test_interval=100",
                   "test_nepisode=1"]
    else:
        common += [f"t_max={step + 10}", "test_interval=1000"]
    run_main(tmp_path / "results", alg, env, *common)
    # the resumed run continues in the checkpoint's folder (issue 12): its new checkpoints beside the old
    assert not os.path.exists(tmp_path / "results" / "models")
    assert int(os.path.basename(find_checkpoint(str(run)))) > step
