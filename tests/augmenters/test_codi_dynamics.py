"""CODI's dynamics and reward models (augmenters/codi/dynamics.py) on real MPE spread data: the inverse model names
the actions, real held-out segments pass the consistency check at `delta: auto`, time-shuffled ones fail."""
import numpy as np
import pytest
import torch as th

from augmenters.codi.dynamics import (
    INV_ACC_FLOOR,
    PASS_FLOOR,
    REWARD_MSE_CEILING,
    DynamicsModels,
    reward_stats,
    segment_avail,
    segment_batch,
)
from augmenters.codi.normaliser import ObsNormaliser
from envs import make_env
from offline.segments import all_starts, segments

H, N, LIMIT = 8, 3, 25
TRAIN_EPISODES = 400


def spread_arrays(n_episodes, seed):
    """Dataset arrays (obs, actions, reward, filled, avail_actions) of spread N=3 episodes under random actions."""
    env = make_env("mpe", scenario="spread", N=N, max_cycles=LIMIT)
    rng = np.random.default_rng(seed)
    O, A = env.get_obs_size(), env.get_total_actions()
    out = {"obs": np.zeros((n_episodes, LIMIT + 1, N, O), np.float32),
           "actions": np.zeros((n_episodes, LIMIT + 1, N, 1), np.int64),
           "reward": np.zeros((n_episodes, LIMIT + 1, 1), np.float32),
           "filled": np.ones((n_episodes, LIMIT + 1, 1), np.uint8),
           "avail_actions": np.ones((n_episodes, LIMIT + 1, N, A), np.uint8)}
    for e in range(n_episodes):
        env.seed(seed * 10_000 + e)
        out["obs"][e, 0] = env.reset()[0]
        for t in range(LIMIT):
            a = rng.integers(A, size=N)
            out["reward"][e, t, 0] = env.step(a)[0]
            out["actions"][e, t, :, 0] = a
            out["obs"][e, t + 1] = env.get_obs()
    return out


@pytest.fixture(scope="module")
def trained():
    """Models trained on TRAIN_EPISODES episodes (1,000 steps of 32 segments), the normaliser, and held-out real
    segments. Many short random episodes: f_rwd generalises only across many landmark layouts."""
    th.manual_seed(0)
    train, held_out = spread_arrays(TRAIN_EPISODES, seed=1), spread_arrays(20, seed=2)
    norm = ObsNormaliser.fit(train["obs"], train["filled"][..., 0].astype(bool))
    seg = segments(train, H, all_starts(train["filled"]))
    test = segments(held_out, H, all_starts(held_out["filled"]))
    mean, scale = reward_stats(seg)
    dyn = DynamicsModels(N, train["obs"].shape[-1], 5, hidden=64, generated=norm.generated, reward_mean=mean,
                         reward_scale=scale)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        dyn.train_step(segment_batch(seg, norm, rng.integers(len(seg), size=32)))
    return dyn, norm, segment_batch(test, norm), test


def test_inverse_model_names_held_out_actions(trained):
    dyn, _, batch, _ = trained
    acc = dyn.action_accuracy(batch)
    print(f"f_inv held-out accuracy {acc:.3f}")
    assert acc >= INV_ACC_FLOOR
    a_hat = dyn.infer_actions(batch["x"])
    assert a_hat.shape == batch["actions"][:, :-1].shape and a_hat.dtype == th.long


def test_real_segments_pass_at_auto_delta(trained):
    dyn, _, batch, _ = trained
    x, valid = batch["x"], batch["step_valid"]
    delta = dyn.calibrate_delta(x, valid, quantile=0.95)
    err = dyn.step_errors(x, dyn.infer_actions(x))
    assert err.shape == (len(x), H - 1)
    steps = err[valid[:, :-1]]
    assert abs(float((steps <= delta).float().mean()) - 0.95) < 0.01  # the quantile of held-out step errors
    rates = dyn.pass_rate(x, [delta / 4, delta, 4 * delta], valid)
    print(f"delta {delta:.2e}; real segment pass rate at delta/4, delta, 4 delta: {np.round(rates, 3)}")
    assert rates[1] >= PASS_FLOOR and np.all(np.diff(rates) >= 0)
    assert dyn.pass_rate(x, delta, valid) == pytest.approx(float(dyn.passes(x, delta, valid).float().mean()))
    # per="segment" picks the delta at which that fraction of segments passes
    seg_delta = dyn.calibrate_delta(x, valid, quantile=0.9, per="segment")
    assert dyn.pass_rate(x, seg_delta, valid) == pytest.approx(0.9, abs=0.02)


def test_time_shuffled_segments_fail(trained):
    dyn, _, batch, _ = trained
    full = batch["step_valid"][:, :-1].all(1)
    x = batch["x"][full]
    gen = th.Generator().manual_seed(0)
    shuffled = th.stack([seg[th.randperm(H, generator=gen)] for seg in x])
    delta = dyn.calibrate_delta(batch["x"], batch["step_valid"], quantile=0.95)
    real, fake = dyn.pass_rate(x, delta), dyn.pass_rate(shuffled, delta)
    print(f"pass rate at delta: real {real:.3f}, time-shuffled {fake:.3f}")
    assert fake <= 0.05 and real - fake >= 0.5


def test_reward_model_beats_the_mean_on_held_out_steps(trained):
    dyn, _, batch, test = trained
    full = batch["step_valid"][:, :-1].all(1)
    x = batch["x"][full]
    r_hat = dyn.rewards(x, batch["actions"][full][:, :-1])
    r = th.as_tensor(test.reward[full.numpy()][:, :-1])
    mse, var = float((r_hat - r).square().mean()), float(r.var())
    print(f"f_rwd held-out MSE {mse:.2f} vs reward variance {var:.2f}")
    assert r_hat.shape == r.shape and mse < REWARD_MSE_CEILING * var


def test_padding_past_the_episode_end_is_not_checked(trained):
    dyn, _, batch, _ = trained
    x = batch["x"][:4].clone()
    delta = dyn.calibrate_delta(batch["x"], batch["step_valid"], quantile=1.0)
    assert dyn.passes(x, delta).all()
    x[:, 5:] = 5.0  # garbage after step 4 (as after an episode's end)
    valid = th.zeros(4, H, dtype=th.bool)
    valid[:, :4] = True  # transitions 0..3 (o_0..o_4) are real
    assert not dyn.passes(x, delta).any() and dyn.passes(x, delta, valid).all()
    with pytest.raises(ValueError, match=r"\[B, H-1\]"):
        dyn.passes(x, delta, valid[:, :3])


def test_available_actions_mask_inference_and_training(trained):
    dyn, norm, batch, test = trained
    arrays = {"avail_actions": np.ones((test.episode.max() + 1, LIMIT + 1, N, 5), np.uint8)}
    avail = segment_avail(arrays, test)
    assert avail.shape == (len(test), H, N, 5) and (avail[~test.obs_valid] == 0).all()
    only_stay = np.zeros_like(avail)
    only_stay[..., 0] = 1
    assert (dyn.infer_actions(batch["x"], only_stay) == 0).all()
    # the logged actions marked unavailable: they still count as available (a finite loss), and masking the other
    # actions can only lower the cross-entropy
    masked = dyn.loss(dict(batch, avail_actions=th.as_tensor(only_stay).bool()))
    assert th.isfinite(masked["total"]) and float(masked["inv"].detach()) <= float(dyn.loss(batch)["inv"].detach())


def test_checkpoint_round_trip_and_exact_resume(trained):
    dyn, norm, batch, _ = trained
    th.manual_seed(1)
    a = DynamicsModels(N, batch["x"].shape[-1], 5, hidden=16, generated=norm.generated, reward_scale=2.0)
    small = {k: v[:16] for k, v in batch.items()}
    a.train_step(small)
    state = a.state_dict()
    b = DynamicsModels.from_state_dict(state)
    x = batch["x"][:8]
    assert th.equal(a.infer_actions(x), b.infer_actions(x))
    assert th.equal(a.step_errors(x, a.infer_actions(x)), b.step_errors(x, b.infer_actions(x)))
    a.train_step(small), b.train_step(small)  # the optimiser state came along: the next step is the same
    assert all(th.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    wrong = DynamicsModels(N, batch["x"].shape[-1], 5, hidden=32, generated=norm.generated, reward_scale=2.0)
    with pytest.raises(ValueError, match="hidden"):
        wrong.load_state_dict(state)


def test_non_finite_loss_stops_before_changing_weights(trained):
    _, norm, batch, _ = trained
    dyn = DynamicsModels(N, batch["x"].shape[-1], 5, hidden=16, generated=norm.generated)
    before = [p.clone() for p in dyn.parameters()]
    bad = {k: v[:4].clone() for k, v in batch.items()}
    bad["reward"][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        dyn.train_step(bad)
    assert all(th.equal(p, q) for p, q in zip(before, dyn.parameters()))


def test_bad_shapes_and_settings_are_named():
    with pytest.raises(ValueError, match="generated"):
        DynamicsModels(3, 18, 5, generated=np.ones((3, 17), bool))
    with pytest.raises(ValueError, match="reward_scale"):
        DynamicsModels(3, 18, 5, reward_scale=0)
    dyn = DynamicsModels(3, 18, 5, hidden=8)
    with pytest.raises(ValueError, match="quantile"):
        dyn.calibrate_delta(th.zeros(2, H, 3, 18), quantile=1.5)


@pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu(trained):
    dyn, _, batch, _ = trained
    gpu = DynamicsModels.from_state_dict(dyn.state_dict(), device="cuda")
    x = batch["x"][:64]
    delta = dyn.calibrate_delta(batch["x"], batch["step_valid"])
    assert th.equal(gpu.infer_actions(x.cuda()).cpu(), dyn.infer_actions(x))
    assert th.allclose(gpu.step_errors(x.cuda(), dyn.infer_actions(x).cuda()).cpu(),
                       dyn.step_errors(x, dyn.infer_actions(x)), rtol=1e-3, atol=1e-7)
    assert gpu.passes(x.cuda(), delta).device.type == "cuda"
    losses = gpu.train_step({k: v[:32].cuda() for k, v in batch.items()})
    assert np.isfinite(losses["total"])
    back = DynamicsModels.from_state_dict(gpu.state_dict())  # a GPU checkpoint loads on the CPU
    assert all(p.device.type == "cpu" for p in back.parameters())
