import numpy as np
import pytest

from helpers import make_ctx

COUNTDOWN = {"env": "countdown", "env_args": {"episode_limit": 6}}


@pytest.fixture(params=["episode", "parallel"])
def runner_kw(request):
    if request.param == "episode":
        return {"runner": "episode", "batch_size_run": 1}
    return {"runner": "parallel", "batch_size_run": 3, "n_workers": 2}


def test_time_limit_end_is_not_stored_as_terminal(runner_kw):
    ctx = make_ctx("qmix", "matrix_game", **COUNTDOWN, **runner_kw)
    try:
        batch = ctx.runner.run()
    finally:
        ctx.runner.close_env()
    assert batch.max_seq_length == 7
    assert batch["terminated"].sum() == 0  # truncation: bootstrapped, not terminal
    assert batch["filled"][:, :, 0].tolist() == [[1] * 7] * batch.batch_size  # incl. the final state
    # the final state (t=6) is stored for bootstrapping
    assert batch["state"][:, 6, 0].tolist() == [6.0] * batch.batch_size
    assert batch["reward"][:, :6].sum().item() == 6 * batch.batch_size
    assert ctx.runner.t_env == 6 * batch.batch_size


def test_true_terminal_is_stored_and_padding_is_unfilled(runner_kw):
    ctx = make_ctx("qmix", "matrix_game", env="countdown", env_args={"episode_limit": 6, "terminal_at": 3},
                   **runner_kw)
    try:
        batch = ctx.runner.run()
    finally:
        ctx.runner.close_env()
    for b in range(batch.batch_size):
        assert batch["terminated"][b, :, 0].tolist() == [0, 0, 1, 0, 0, 0, 0]
        assert batch["filled"][b, :, 0].tolist() == [1, 1, 1, 1, 0, 0, 0]
        assert batch["state"][b, 3, 0].item() == 3.0


def test_actions_respect_availability_and_test_stats_are_logged(runner_kw):
    ctx = make_ctx("qmix", "matrix_game", **COUNTDOWN, test_nepisode=runner_kw["batch_size_run"], **runner_kw)
    try:
        for _ in range(3):
            batch = ctx.runner.run()
            assert (batch["actions"][:, :6, 1, 0] != 0).all()  # agent 1 may never take action 0
        ctx.runner.run(test_mode=True)
    finally:
        ctx.runner.close_env()
    info = ctx.sacred_run.info
    assert info["test_return_mean"] == [6.0] and info["test_ep_length_mean"] == [6.0]
    assert "return_mean" in info and "epsilon" in info and "env_only_steps_per_s" in info
    assert info["return_mean_T"][0] == 6 * runner_kw["batch_size_run"]
    assert info["test_won_mean"] == [0.0]


def test_parallel_runner_uses_distinct_env_seeds():
    ctx = make_ctx("qmix", "lbf", runner="parallel", batch_size_run=4, n_workers=2)
    try:
        batch = ctx.runner.run()
    finally:
        ctx.runner.close_env()
    first_states = batch["state"][:, 0].numpy()
    assert len({tuple(s) for s in first_states}) > 1  # not four copies of one episode
    assert np.isfinite(first_states).all()


def test_truncation_as_terminal_reproduces_epymarl_storage(runner_kw):
    ctx = make_ctx("qmix", "matrix_game", **COUNTDOWN, truncation_as_terminal=True, **runner_kw)
    try:
        batch = ctx.runner.run()
    finally:
        ctx.runner.close_env()
    assert batch["terminated"][:, :, 0].tolist() == [[0, 0, 0, 0, 0, 1, 0]] * batch.batch_size
