"""CODI stitching (Algorithm 2) and the generated dataset file, with fake samplers and dynamics models.

Toy line world: o_t = [tag, t, u] for both agents, u a uniform draw of the sampler (its fresh noise). The fake
dynamics infer â_t = t mod 3 and r̂_t = t, so every number of a stitched episode is known. The file tests use the
climbing game, whose observation (the one-hot of the last joint action) determines state, actions and rewards
exactly, so the generated file trains BC through src/main.py."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch as th

from augmenters.codi import generation
from augmenters.codi.generation import GenerationSettings, generate_dataset
from augmenters.codi.normaliser import ObsNormaliser
from augmenters.codi.stitching import GenerationError, StitchSettings, check_hooks, resolve_target_rtg, stitch
from envs.matrix_game import payoff_matrix
from helpers import run_main, sacred_dir, write_random_dataset
from offline import DatasetWriter, OfflineDataset
from offline.checks import content_problems
from offline.format import DatasetError
from utils.files import FolderLock, sha256_file

N_AGENTS = 2
IDENTITY = ObsNormaliser(-np.ones((N_AGENTS, 3)), np.ones((N_AGENTS, 3)))  # centre 0, scale 1


class LineSampler:
    """From o0 = [tag, s, *] the segment [tag, s + h, u_h] (u_h ~ U[0, 1) from the generator); records its calls."""

    def __init__(self, H):
        self.H, self.calls = H, []

    def sample(self, o0, R, generator):
        B = o0.shape[0]
        x = o0[:, None].repeat(1, self.H, 1, 1)
        x[..., 1] += th.arange(self.H, dtype=x.dtype)[None, :, None]
        x[:, 1:, :, 2] = th.rand(B, self.H - 1, generator=generator)[..., None]
        self.calls.append({"o0": o0.clone(), "R": R.clone(), "x": x.clone()})
        return x


class LineDynamics:
    """â_t = t mod 3, r̂_t = t; the step error is the noise u of o_{t+1}, or 10 on the rows `fail[call]` names."""

    def __init__(self, fail=None):
        self.fail, self.calls, self.failed = fail or {}, 0, []

    def infer_actions(self, x):
        return x[:, :-1, :, 1].round().long() % 3

    def step_errors(self, x, a_hat):
        err = x[:, 1:, 0, 2].double().clone()
        rows = sorted(self.fail.get(self.calls, ()))
        err[rows] = 10.0
        self.failed.append(rows)
        self.calls += 1
        return err

    def rewards(self, x, a_hat):
        return x[:, :-1, 0, 1].clone()


class LineHooks:
    def __init__(self, terminal_at=None):
        self.terminal_at = terminal_at

    def state_from_obs(self, obs, actions=None):
        return obs[..., 0, :2]

    def avail_actions_from_obs(self, obs):
        return np.ones((*obs.shape[:-1], 3), np.uint8)

    def terminal_from_obs(self, obs):
        t = obs[..., 0, 1]
        return t >= self.terminal_at if self.terminal_at is not None else np.zeros(t.shape, bool)


def line_initial_obs(E=5):
    o = np.zeros((E, N_AGENTS, 3), np.float32)
    o[:, :, 0] = np.arange(E)[:, None]
    return o


class LineHooksWithViews(LineHooks):
    """The view gap of an observation is its noise u (so it can be told from the dynamics error only by threshold)."""

    def view_gap_from_obs(self, obs):
        return obs[..., 0, 2]


def run_line(H=4, T=10, n=2, batch=2, target=100.0, delta=1.0, M=4, max_attempts=200, fail=None, terminal_at=None,
             seed=0, max_view_gap=None):
    sampler, dynamics = LineSampler(H), LineDynamics(fail)
    settings = StitchSettings(n, H, T, target, delta, batch, M, max_attempts, max_view_gap)
    hooks = LineHooksWithViews(terminal_at) if max_view_gap is not None else LineHooks(terminal_at)
    arrays, counters = stitch(sampler, dynamics, IDENTITY, hooks, line_initial_obs(), settings,
                              np.random.default_rng(seed), th.Generator().manual_seed(seed))
    return arrays, counters, sampler, dynamics


def test_rtg_decreases_by_the_segment_rewards_and_episodes_are_truncated_at_the_limit():
    arrays, counters, sampler, _ = run_line(H=4, T=10, n=2, batch=2, target=100.0)
    # 3 + 3 + 3 transitions, then the 4th segment is cut to the 1 transition left
    assert [c["R"].tolist() for c in sampler.calls] == [[100.0] * 2, [97.0] * 2, [85.0] * 2, [64.0] * 2]
    for prev, nxt in zip(sampler.calls, sampler.calls[1:]):
        th.testing.assert_close(nxt["o0"], prev["x"][:, -1])  # the last observation starts the next segment
    t = np.arange(11)
    assert (arrays["filled"][..., 0] == 1).all() and (arrays["obs"][:, :, :, 1] == t[None, :, None]).all()
    assert (arrays["actions"][:, :10, :, 0] == (t[:10] % 3)[None, :, None]).all()
    np.testing.assert_array_equal(arrays["reward"][:, :10, 0], np.tile(t[:10], (2, 1)))
    assert arrays["reward"].sum() == 2 * 45 and arrays["terminated"].sum() == 0
    assert (arrays["truncated"][:, 9, 0] == 1).all() and arrays["truncated"].sum() == 2
    np.testing.assert_array_equal(arrays["state"], arrays["obs"][:, :, 0, :2])
    assert content_problems(arrays, 3) == []
    assert counters["segments"] == counters["accepted"] == 8 and counters["truncated"] == counters["episodes"] == 2


def test_a_terminal_observation_ends_the_episode_at_that_transition():
    arrays, counters, _, _ = run_line(H=4, T=10, n=3, batch=2, terminal_at=5)
    L = arrays["filled"][..., 0].sum(1) - 1
    assert (L == 5).all()  # obs 5 is reached by transition 4, the episode's last
    assert (arrays["terminated"][:, 4, 0] == 1).all() and arrays["terminated"].sum() == 3
    assert arrays["truncated"].sum() == 0 and (arrays["obs"][:, 6:] == 0).all()
    assert counters["terminated"] == 3 and counters["truncated"] == 0
    assert content_problems(arrays, 3) == []


def test_only_failing_rows_are_denoised_again_with_fresh_noise():
    fail = {0: {1}, 1: {1, 2}, 2: {0}}
    arrays, counters, sampler, dynamics = run_line(H=4, T=30, n=3, batch=3, M=5, fail=fail)
    for c in range(3):
        prev, nxt = sampler.calls[c], sampler.calls[c + 1]
        for i in range(3):
            if i in fail[c]:  # the same start and RTG, new noise
                assert th.equal(nxt["o0"][i], prev["o0"][i]) and nxt["R"][i] == prev["R"][i]
                assert not th.equal(nxt["x"][i, 1:], prev["x"][i, 1:])
            else:  # moved on: never re-denoised
                assert th.equal(nxt["o0"][i], prev["x"][i, -1])
                assert nxt["R"][i] == prev["R"][i] - prev["x"][i, :-1, 0, 1].sum()
    assert counters["resamples"] == counters["rejected"] == 4 and counters["dropped"] == 0
    assert counters["segments"] == counters["accepted"] + 4 == 3 * 10 + 4
    # the episodes hold the accepted segments: continuous steps, whatever was rejected
    assert (arrays["obs"][:, :, :, 1] == np.arange(31)[None, :, None]).all()


def test_a_trajectory_that_keeps_failing_is_dropped_and_restarted():
    fail = {1: {0}, 2: {0}, 3: {0}}  # row 0's second segment fails 3 times: M = 2 re-denoisings, then dropped
    arrays, counters, sampler, _ = run_line(H=4, T=10, n=2, batch=2, M=2, fail=fail, target=50.0)
    assert counters["dropped"] == 1 and counters["resamples"] == 2 and counters["started"] == 3
    # call 3: row 1 finishes (3 + 3 + 3 + 1 transitions) and row 0 is dropped; only row 0 is left, restarted
    restarted = sampler.calls[4]
    assert len(restarted["o0"]) == 1 and restarted["o0"][0, 0, 1] == 0 and restarted["R"][0] == 50.0
    assert counters["episodes"] == 2 and (arrays["filled"][..., 0].sum(1) == 11).all()


def test_unavailable_inferred_actions_reject_the_segment():
    class NoAction2(LineHooks):
        def avail_actions_from_obs(self, obs):
            avail = super().avail_actions_from_obs(obs)
            avail[..., 2] = obs[..., 1] != 5  # â_5 = 5 mod 3 = 2 is not allowed at t = 5
            return avail

    sampler, dynamics = LineSampler(4), LineDynamics()
    with pytest.raises(GenerationError, match=r"8 trajectories were dropped .* no episode finished .* [1-9]\d* "
                                              r"rejected for unavailable actions"):
        stitch(sampler, dynamics, IDENTITY, NoAction2(), line_initial_obs(),
               StitchSettings(1, 4, 10, 0.0, 1.0, 1, 1, 8), np.random.default_rng(0), th.Generator().manual_seed(0))


def test_max_view_gap_rejects_segments_whose_used_observations_disagree():
    # view gap = u ~ U[0, 1): at 0.7 most segments of 3 fresh observations fail it and are denoised again
    arrays, counters, _, _ = run_line(H=4, T=10, n=6, batch=3, M=50, max_view_gap=0.7)
    u = arrays["obs"][:, 1:, 0, 2]
    assert counters["episodes"] == 6 and u.max() <= 0.7
    assert counters["rejected_view_gap"] == counters["rejected"] > 0 and counters["rejected_unavailable"] == 0
    # off: the same draws keep observations above it, and nothing is counted
    arrays, counters, _, _ = run_line(H=4, T=10, n=6, batch=3, M=50)
    assert arrays["obs"][:, 1:, 0, 2].max() > 0.7 and counters["rejected_view_gap"] == counters["rejected"] == 0


def test_a_view_gap_nothing_passes_stops_with_a_message_naming_it():
    sampler, dynamics = LineSampler(4), LineDynamics()
    with pytest.raises(GenerationError, match=r"the last 20 segments all failed the checks .* 20 passed δ and "
                                              r"the action check but failed max_view_gap=0, .*To go on: raise "
                                              r"max_view_gap \(null: off\); or train"):
        stitch(sampler, dynamics, IDENTITY, LineHooksWithViews(), line_initial_obs(),
               StitchSettings(1, 4, 10, 0.0, 1.0, 1, 100, 20, max_view_gap=0.0), np.random.default_rng(0),
               th.Generator().manual_seed(0))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_view_gap must be null"):
            StitchSettings(1, 4, 10, 0.0, 1.0, max_view_gap=bad).check()
    info = {"n_agents": 2, "n_actions": 3, "state_shape": 2}
    check_hooks(LineHooks(), line_initial_obs(), info)  # not needed without max_view_gap
    with pytest.raises(ValueError, match="max_view_gap needs the env hook view_gap_from_obs, which LineHooks lacks"
                                         ".*max_view_gap: null"):
        check_hooks(LineHooks(), line_initial_obs(), info, view_gap=True)
    check_hooks(LineHooksWithViews(), line_initial_obs(), info, view_gap=True)


class LineHooksSnapped(LineHooks):
    """snap_obs puts the noise u on the quarters (0, 0.25, .., 1); the real o_0 (u = 0) stays as it is."""

    def snap_obs(self, obs, first=None):
        out = np.array(obs, copy=True)
        out[..., 2] = np.round(out[..., 2] * 4) / 4
        return out


class LineHooksSnappedWithViews(LineHooksSnapped, LineHooksWithViews):
    pass


def test_snap_obs_snaps_the_generated_steps_before_the_checks():
    sampler, dynamics = LineSampler(4), LineDynamics()
    settings = StitchSettings(6, 4, 9, 100.0, 0.55, 3, 50, 200, snap_obs=True)  # T = 9: 3 whole segments each
    arrays, counters = stitch(sampler, dynamics, IDENTITY, LineHooksSnapped(), line_initial_obs(), settings,
                              np.random.default_rng(0), th.Generator().manual_seed(0))
    u = arrays["obs"][:, :, :, 2][arrays["filled"][..., 0] == 1]
    assert set(np.unique(u)) <= {0.0, 0.25, 0.5} and counters["episodes"] == 6
    # the check judged the snapped steps: a segment passes delta = 0.55 iff its raw draws all round to 0.5 or less
    raw = [c["x"][:, 1:, 0, 2].numpy() for c in sampler.calls]
    assert counters["accepted"] == sum(int((r < 0.625).all(1).sum()) for r in raw)
    assert sum(int((r <= 0.55).all(1).sum()) for r in raw) < counters["accepted"]  # raw steps: fewer would pass
    # max_view_gap judges the generator's own views (snapped ones always agree): raw u <= 0.7 passes, snapped 0.75
    sampler = LineSampler(4)
    arrays, counters = stitch(sampler, LineDynamics(), IDENTITY, LineHooksSnappedWithViews(), line_initial_obs(),
                              StitchSettings(6, 4, 9, 100.0, 1.0, 3, 50, 200, max_view_gap=0.7, snap_obs=True),
                              np.random.default_rng(0), th.Generator().manual_seed(0))
    raw = [c["x"][:, 1:, 0, 2].numpy() for c in sampler.calls]
    assert counters["accepted"] == sum(int((r <= 0.7).all(1).sum()) for r in raw)
    assert counters["rejected_view_gap"] == counters["rejected"] > 0
    assert "snap_obs" not in GenerationSettings(1, 4, 0.0, 0.1).identity()  # off: earlier parts and files match
    assert GenerationSettings(1, 4, 0.0, 0.1, snap_obs=True).identity()["snap_obs"] is True
    # delta=auto's quantile only words the advice when stuck: delta's value decides, so earlier parts still match
    assert GenerationSettings(1, 4, 0.0, 0.1, delta_quantile=0.9).identity() == GenerationSettings(1, 4, 0.0,
                                                                                                   0.1).identity()
    info = {"n_agents": 2, "n_actions": 3, "state_shape": 2}
    with pytest.raises(ValueError, match="snap_obs needs the env hook snap_obs, which LineHooks lacks.*snap_obs: "
                                         "False"):
        check_hooks(LineHooks(), line_initial_obs(), info, snap=True)
    off_grid = line_initial_obs()
    off_grid[:, :, 2] = 0.1  # real observations the hook would move: it does not fit this layout
    with pytest.raises(ValueError, match=r"LineHooksSnapped.snap_obs moves the dataset's real observations \(by up "
                                         r"to 0.1\)"):
        check_hooks(LineHooksSnapped(), off_grid, info, snap=True)
    check_hooks(LineHooksSnapped(), line_initial_obs(), info, snap=True)
    with pytest.raises(ValueError, match="snap_obs must be True or False"):
        StitchSettings(1, 4, 10, 0.0, 1.0, snap_obs=1).check()


def test_target_rtg_and_hooks_are_checked():
    returns = np.array([-10.0, -5.0, 0.0, 5.0])
    assert resolve_target_rtg("quantile:0.5", returns) == -2.5 and resolve_target_rtg(-105, returns) == -105.0
    for bad in ("quantile:2", "best", float("nan")):
        with pytest.raises(ValueError, match="target_rtg"):
            resolve_target_rtg(bad, returns)

    class NoTerminal:
        def state_from_obs(self, obs, actions=None):
            return obs[..., 0, :2]

        def avail_actions_from_obs(self, obs):
            return np.ones((*obs.shape[:-1], 3))

    info = {"n_agents": 2, "n_actions": 3, "state_shape": 2}
    with pytest.raises(ValueError, match="NoTerminal has no terminal_from_obs"):
        check_hooks(NoTerminal(), line_initial_obs(), info)
    with pytest.raises(ValueError, match="state_from_obs"):
        check_hooks(LineHooks(), line_initial_obs(), {**info, "state_shape": 4})
    with pytest.raises(ValueError, match="H=12 is longer than the episode limit 10"):
        StitchSettings(1, 12, 10, 0.0, 1.0).check()


class Replay:
    """Sampler and dynamics that replay recorded episodes: o0 is looked up in the source (every observation of the
    episodes used is unique there), the segment, actions and rewards are the recorded ones (the final step repeated
    past an episode's end)."""

    def __init__(self, arrays, H):
        self.H, self.T1 = H, arrays["obs"].shape[1]
        pad = lambda v: np.concatenate([v, np.repeat(v[:, -1:], H, axis=1)], axis=1)
        self.obs, self.act, self.rew = (pad(arrays["obs"]), pad(arrays["actions"][..., 0]),
                                        pad(arrays["reward"][..., 0]))
        self.flat = self.obs[:, :self.T1].reshape(-1, self.obs[0, 0].size)

    def unique_episodes(self):
        _, inverse, count = np.unique(self.flat, axis=0, return_inverse=True, return_counts=True)
        return np.flatnonzero((count[inverse.reshape(-1)] == 1).reshape(len(self.obs), -1).all(1))

    def _at(self, o0, field):
        rows = [int(np.flatnonzero((self.flat == r).all(1))[0]) for r in o0.reshape(len(o0), -1).numpy()]
        return th.as_tensor(np.stack([field[i // self.T1, i % self.T1:i % self.T1 + self.H] for i in rows]))

    def sample(self, o0, R, generator):
        return self._at(o0, self.obs)

    def infer_actions(self, x):
        return self._at(x[:, 0], self.act)[:, :-1]

    def step_errors(self, x, a_hat):
        return th.zeros(len(x), self.H - 1)

    def rewards(self, x, a_hat):
        return self._at(x[:, 0], self.rew)[:, :-1]


def test_replayed_lbf_episodes_come_back_exactly_through_the_real_env_hooks(tmp_path):
    """The real LBF hooks (state: qllm holds the food slots of the first step and the last actions) on stitched
    segments rebuild the recorded state and avail_actions exactly: stitching calls them as they expect."""
    path, ctx = write_random_dataset(str(tmp_path / "lbf.h5"), "lbf_8x8_2p_2f_coop", 120,
                                     env_args={"time_limit": 12})
    ds = OfflineDataset.load(path)
    src = ds.arrays()
    replay = Replay(src, H=6)
    pool = replay.unique_episodes()
    assert len(pool) >= 4
    env = ctx.runner.env
    check_hooks(env, src["obs"][:, 0], ds.env_info)
    identity = ObsNormaliser(-np.ones(src["obs"].shape[2:]), np.ones(src["obs"].shape[2:]))
    out, counters = stitch(replay, replay, identity, env, src["obs"][pool, 0], StitchSettings(4, 6, 12, 0.0, 0.1, 2),
                           np.random.default_rng(0), th.Generator())
    assert content_problems(out, ds.env_info["n_actions"]) == [] and counters["truncated"] == 4
    for i in range(4):
        e = pool[np.flatnonzero((src["obs"][pool, 0] == out["obs"][i, 0]).all((1, 2)))[0]]
        for key in ("obs", "state", "avail_actions", "reward", "filled", "truncated"):
            np.testing.assert_array_equal(out[key][i], src[key][e], err_msg=key)
        np.testing.assert_array_equal(out["actions"][i, :12], src["actions"][e, :12])  # step 12: a placeholder


class WobblyReplay(Replay):
    """Replay whose generated steps are off LBF's grid by up to 0.3 (a diffusion model's gliding agents)."""

    def sample(self, o0, R, generator):
        x = super().sample(o0, R, generator).float()
        x[:, 1:] += th.rand(x[:, 1:].shape, generator=generator) * 0.6 - 0.3
        return x


def test_snap_obs_puts_wobbly_lbf_segments_back_on_the_grid_through_the_real_env_hook(tmp_path):
    """With snap_obs the real LBF hook turns off-grid generated observations into the recorded ones, so the
    stitched episodes equal the source's exactly (the replay finds each next o_0 again only because of it)."""
    path, ctx = write_random_dataset(str(tmp_path / "lbf.h5"), "lbf_8x8_2p_2f_coop", 120,
                                     env_args={"time_limit": 12})
    src = OfflineDataset.load(path).arrays()
    replay = WobblyReplay(src, H=6)
    pool = replay.unique_episodes()
    env = ctx.runner.env
    identity = ObsNormaliser(-np.ones(src["obs"].shape[2:]), np.ones(src["obs"].shape[2:]))
    out, counters = stitch(replay, replay, identity, env, src["obs"][pool, 0],
                           StitchSettings(4, 6, 12, 0.0, 0.1, 2, snap_obs=True), np.random.default_rng(0),
                           th.Generator().manual_seed(0))
    assert counters["truncated"] == 4 and content_problems(out, 6) == []
    for i in range(4):
        e = pool[np.flatnonzero((src["obs"][pool, 0] == out["obs"][i, 0]).all((1, 2)))[0]]
        for key in ("obs", "state", "avail_actions", "reward"):
            np.testing.assert_array_equal(out[key][i], src[key][e], err_msg=key)


# ----- the generated file (climbing: the observation is the one-hot of the last joint action) -----
CLIMBING = payoff_matrix("climbing")
LIMIT = 5


class ClimbingSampler:
    """Random joint actions, as normalised one-hot observations; x[:, 0] = o0."""

    def __init__(self, normaliser, H):
        self.normaliser, self.H = normaliser, H

    def sample(self, o0, R, generator):
        B = o0.shape[0]
        a = th.randint(0, 3, (B, self.H - 1, 2), generator=generator)
        obs = th.cat([th.nn.functional.one_hot(a[..., 0], 3), th.nn.functional.one_hot(a[..., 1], 3)], -1).float()
        x = self.normaliser.normalise(obs[:, :, None].repeat(1, 1, 2, 1))
        return th.cat([o0[:, None], x], 1)


class ClimbingDynamics:
    """Exact inverse and reward models; a step that plays (2, 2) fails the check (error 1, delta 0.5)."""

    def __init__(self, normaliser, always_fail=False):
        self.normaliser, self.always_fail = normaliser, always_fail

    def infer_actions(self, x):
        obs = self.normaliser.denormalise(x[:, 1:, 0])
        return th.stack([obs[..., :3].argmax(-1), obs[..., 3:].argmax(-1)], -1)

    def step_errors(self, x, a_hat):
        err = ((a_hat[..., 0] == 2) & (a_hat[..., 1] == 2)).double()
        return th.ones_like(err) if self.always_fail else err

    def rewards(self, x, a_hat):
        return th.as_tensor(CLIMBING)[a_hat[..., 0], a_hat[..., 1]]


class ClimbingHooks:
    def state_from_obs(self, obs, actions=None):
        return obs[..., 0, :]

    def avail_actions_from_obs(self, obs):
        return np.ones((*obs.shape[:-1], 3), np.uint8)

    def terminal_from_obs(self, obs):
        return np.zeros(obs.shape[:-2], bool)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path, _ = write_random_dataset(str(tmp_path_factory.mktemp("src") / "climbing.h5"), "climbing", 8,
                                   env_args={"episode_limit": LIMIT})
    ds = OfflineDataset.load(path)
    return path, ObsNormaliser.fit(ds.arrays()["obs"], ds.arrays()["filled"][..., 0] == 1)


GENERATION = {"n_episodes": 6, "horizon": 3, "target_rtg": "quantile:0.5", "delta": 0.5, "seed": 1, "part_size": 4,
              "batch_size": 3, "max_resamples": 2, "max_attempts": 30}


class SlowClimbingSampler(ClimbingSampler):
    def sample(self, o0, R, generator):
        time.sleep(0.2)  # so that a test can kill the process between two parts
        return super().sample(o0, R, generator)


def killed_after_first_part(monkeypatch, out, source, **kw):
    """generate() killed (KeyboardInterrupt) right after it wrote part 0 (4 of the 6 episodes)."""
    write_part = generation._write_part

    def write_then_die(path, arrays, counters):
        write_part(path, arrays, counters)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(generation, "_write_part", write_then_die)
        with pytest.raises(KeyboardInterrupt):
            generate(out, source, **kw)


def generate(out, source, always_fail=False, sampler=ClimbingSampler, log=None, log_every_s=60.0, **overrides):
    path, normaliser = source
    settings = GenerationSettings(**{**GENERATION, **overrides})
    return generate_dataset(out, path, sampler(normaliser, settings.horizon),
                            ClimbingDynamics(normaliser, always_fail), normaliser, ClimbingHooks(), settings, "codi",
                            model_hashes={"diffusion": "abc", "dynamics": "def"}, config={"augmenter": "codi"},
                            log=log, log_every_s=log_every_s)


def test_generation_reports_its_progress_counting_the_parts_already_written(tmp_path, source, monkeypatch):
    class Lines:
        def __init__(self):
            self.lines = []

        def info(self, line):
            self.lines.append(line)

    out, first = tmp_path / "gen.h5", Lines()
    killed_after_first_part(monkeypatch, out, source, log=first, log_every_s=0.0)
    progress = [line for line in first.lines if line.startswith("generation: ")]
    line = (r"generation: \d / 6 episodes \(\d+%\), \d+:\d\d:\d\d elapsed, (about \d+:\d\d:\d\d left|time left not "
            r"known yet), [\d.e+]+ episodes/min; this part: pass rate [01]\.\d{3}, \d+ trajectories dropped")
    assert progress and all(re.match(line, text) for text in progress)
    assert any("about" in text for text in progress)  # once episodes are done, a time left
    assert progress[-1].startswith("generation: 4 / 6 episodes (67%)")
    rest = Lines()
    generate(out, source, log=rest, log_every_s=0.0)  # the rerun starts its count at the 4 already written
    counts = [int(line.split()[1]) for line in rest.lines if line.startswith("generation: ")]
    assert counts[0] >= 4 and counts[-1] == 6 and counts == sorted(counts)


def test_generated_file_loads_merges_and_trains_bc(tmp_path, source):
    src, _ = source
    before = sha256_file(src), os.stat(src).st_mtime_ns
    summary = generate(tmp_path / "gen.h5", source)
    gen = OfflineDataset.load(tmp_path / "gen.h5", expect_env=("matrix_game", {"game": "climbing",
                                                                              "episode_limit": LIMIT}))
    orig = OfflineDataset.load(src)
    assert (sha256_file(src), os.stat(src).st_mtime_ns) == before  # the source is only read
    a = gen.arrays()
    assert len(gen) == 6 and (gen.qualities == "generated").all()
    assert (a["filled"][..., 0].sum(1) == LIMIT + 1).all() and (a["truncated"].sum((1, 2)) == 1).all()
    acts = a["actions"][:, :LIMIT, :, 0]
    np.testing.assert_array_equal(a["obs"][:, 1:, 0, :3].argmax(-1), acts[..., 0])  # â explains the next obs
    np.testing.assert_array_equal(a["reward"][:, :LIMIT, 0], CLIMBING[acts[..., 0], acts[..., 1]])
    np.testing.assert_allclose(gen.returns, a["reward"].sum((1, 2)))
    assert not ((acts[..., 0] == 2) & (acts[..., 1] == 2)).any()  # segments failing the check never enter
    assert (a["obs"][:, 0] == 0).all()  # o_0: a source episode's first observation (zeros in climbing)
    attrs = gen.attrs
    assert attrs["generated"] and attrs["augmenter"] == "codi" and attrs["source_sha256"] == before[0]
    assert attrs["source_path"] == os.path.abspath(src) and json.loads(attrs["model_hashes"])["dynamics"] == "def"
    info = json.loads(attrs["generation"])
    assert info["target_rtg"] == float(np.quantile(orig.returns, 0.5)) == summary["target_rtg"]
    c = info["counters"]
    assert c["episodes"] == 6 and c["accepted"] + c["rejected"] == c["segments"] and c["accepted"] >= 6 * 3
    assert info["pass_rate"] == c["accepted"] / c["segments"] and info["parts"] == 2
    assert json.loads(attrs["config"])["generation"]["delta"] == 0.5
    assert not os.path.exists(generation.parts_folder(tmp_path / "gen.h5"))
    merged = orig.merge(gen)
    assert len(merged) == 14 and (merged.qualities[8:] == "generated").all()
    assert (merged.qualities[:8] == "random").all()
    run_main(tmp_path / "bc", "bc", "climbing", "offline_steps=4", "offline_test_interval=2", "offline_log_interval=2",
             "offline_save_interval=2", "batch_size=4", "test_nepisode=2", f"env_args.episode_limit={LIMIT}",
             f"offline_dataset=['{src}', '{tmp_path / 'gen.h5'}']")
    run_info = json.load(open(os.path.join(sacred_dir(tmp_path / "bc", "bc", "climbing"), "info.json")))
    assert run_info["dataset"]["episodes"] == 14 and len(run_info["dataset"]["fingerprints"]) == 2


def test_merge_keeps_shared_labels_and_names_the_dropped_ones(tmp_path, source):
    ds = OfflineDataset.load(source[0])
    arr = {k: v for k, v in ds.arrays().items() if not k.startswith("labels/")}
    for name, labels in (("a.h5", {"shared": np.arange(8.0), "only_a": np.ones(8)}), ("b.h5", {"shared": -np.ones(8)})):
        with DatasetWriter(tmp_path / name, ds.env_info, ds.attrs["env"], json.loads(ds.attrs["env_args"])) as w:
            w.add_arrays(arr, labels=labels)
    with pytest.warns(UserWarning, match=r"drops the labels \['only_a'\].*kept: \['shared'\]"):
        merged = OfflineDataset.load(tmp_path / "a.h5").merge(OfflineDataset.load(tmp_path / "b.h5"))
    assert merged.label_names == ["shared"] and json.loads(merged.attrs["dropped_labels"]) == ["only_a"]
    np.testing.assert_array_equal(merged.label("shared"), np.concatenate([np.arange(8.0), -np.ones(8)]))


def test_interrupted_generation_leaves_no_accepted_file_and_the_rerun_equals_an_uninterrupted_run(
        tmp_path, source, monkeypatch):
    whole = tmp_path / "whole" / "gen.h5"
    generate(whole, source)
    out = tmp_path / "cut" / "gen.h5"
    write_part = generation._write_part

    def write_then_die(path, arrays, counters):
        write_part(path, arrays, counters)
        raise KeyboardInterrupt  # killed right after part 0

    monkeypatch.setattr(generation, "_write_part", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(out, source)
    monkeypatch.setattr(generation, "_write_part", write_part)
    assert not os.path.exists(out)
    with pytest.raises(FileNotFoundError):
        OfflineDataset.load(out)
    parts = generation.parts_folder(out)
    left = sorted(os.listdir(parts))
    assert left == ["part_00000.npz", "spec.json"]
    for name in left:
        with pytest.raises(DatasetError):
            OfflineDataset.load(os.path.join(parts, name))
    with pytest.raises(GenerationError, match=r"another generation \(it differs in \['settings'\]\)"):
        generate(out, source, delta=0.4)
    summary = generate(out, source)
    assert summary["parts_reused"] == 1 and summary["parts_written"] == 1
    with h5py.File(whole, "r") as f, h5py.File(out, "r") as g:
        keys = []
        f.visit(lambda k: keys.append(k) if isinstance(f[k], h5py.Dataset) else None)
        assert sorted(keys) == sorted(k for k in g if isinstance(g[k], h5py.Dataset))
        for k in keys:
            assert f[k].dtype == g[k].dtype and np.array_equal(f[k][()], g[k][()]), k
        differ = {k for k in set(f.attrs) | set(g.attrs) if k not in g.attrs or k not in f.attrs
                  or not np.array_equal(f.attrs[k], g.attrs[k])}
        assert differ <= {"created"}


def test_labels_written_into_the_source_do_not_invalidate_finished_parts(tmp_path, source, monkeypatch):
    """Labeling rewrites the source file (a labels/ group) without changing an episode: the parts are keyed by the
    episodes' content fingerprint, so a rerun still reuses them; other sampling settings are refused."""
    import shutil

    from offline.label_store import content_fingerprint, write_episode_labels
    path = shutil.copyfile(source[0], tmp_path / "src.h5")
    out = tmp_path / "gen.h5"
    write_part = generation._write_part

    def write_then_die(p, arrays, counters):
        write_part(p, arrays, counters)
        raise KeyboardInterrupt

    monkeypatch.setattr(generation, "_write_part", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(out, (path, source[1]))
    monkeypatch.setattr(generation, "_write_part", write_part)
    before = sha256_file(path)
    E = len(OfflineDataset.load(path))
    write_episode_labels(path, {"best_agent": np.full((E, LIMIT + 1), -1, np.int16)}, {"by": "test"},
                         content_fingerprint(path))
    assert sha256_file(path) != before  # the bytes changed, the episodes did not
    summary = generate(out, (path, source[1]))
    assert summary["parts_reused"] == 1 and summary["parts_written"] == 1
    assert OfflineDataset.load(out).attrs["source_fingerprint"] == content_fingerprint(path)


KILLED_CHILD = """
import sys
sys.path[:0] = [{tests!r}, {here!r}, {src!r}]
import numpy as np
import test_codi_stitching as t
from augmenters.codi.normaliser import ObsNormaliser
from offline import OfflineDataset
a = OfflineDataset.load({path!r}).arrays()
t.generate({out!r}, ({path!r}, ObsNormaliser.fit(a["obs"], a["filled"][..., 0] == 1)), sampler=t.SlowClimbingSampler)
"""


def test_a_generation_killed_by_sigkill_leaves_no_accepted_file_and_the_rerun_completes_it(tmp_path, source):
    here = os.path.dirname(os.path.abspath(__file__))
    out = tmp_path / "cut" / "gen.h5"
    code = KILLED_CHILD.format(tests=os.path.dirname(here), here=here, src=os.path.join(os.path.dirname(os.path.dirname(
        here)), "src"), path=source[0], out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = os.path.join(generation.parts_folder(out), "part_00000.npz")
    deadline = time.time() + 120
    while not os.path.exists(first) and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]  # still generating part 1
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not os.path.exists(out)
    with pytest.raises(FileNotFoundError):
        OfflineDataset.load(out)
    summary = generate(out, source)
    assert summary["parts_reused"] == 1
    whole = tmp_path / "whole" / "gen.h5"
    generate(whole, source)
    a, b = OfflineDataset.load(whole).arrays(), OfflineDataset.load(out).arrays()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert sorted(os.listdir(out.parent)) == ["gen.h5"]  # no parts folder, no temp left


def test_nothing_passes_stops_with_the_pass_rates_and_writes_no_file(tmp_path, source):
    out = tmp_path / "gen.h5"
    with pytest.raises(GenerationError, match=r"pass rate 0/\d+ = 0\.00% .*raise delta") as failed:
        generate(out, source, always_fail=True, max_attempts=12)
    assert failed.value.repeats_on_retry  # a sweep does not retry it (the same seed rejects the same segments)
    assert not os.path.exists(out)
    lock = FolderLock.try_acquire(generation.parts_folder(out))
    try:  # another process generating into the folder: a retry once it is done may go through
        with pytest.raises(GenerationError, match="another process is generating into") as held:
            generate(out, source)
        assert not held.value.repeats_on_retry
    finally:
        lock.release()
    with pytest.raises(ValueError, match="would overwrite its source"):
        generate(source[0], source)
    (tmp_path / "taken.h5").write_bytes(b"")
    with pytest.raises(FileExistsError, match="never overwrites"):
        generate(tmp_path / "taken.h5", source)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not th.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_the_real_sampler_and_dynamics_models_plug_into_generation(tmp_path, source, device):
    """Untrained tiny SegmentDiffusion (through the run mode's GuidedSampler) and DynamicsModels, with a delta
    everything passes: the protocols fit, the file loads, and the same seed gives the same file."""
    from augmenters.codi.augmenter import GuidedSampler
    from augmenters.codi.diffusion import SegmentDiffusion
    from augmenters.codi.dynamics import DynamicsModels

    path, normaliser = source
    info = OfflineDataset.load(path).env_info
    n, O, A = info["n_agents"], info["obs_shape"], info["n_actions"]
    settings = GenerationSettings(n_episodes=4, horizon=3, target_rtg=10.0, delta=1e9, seed=2, part_size=2,
                                  batch_size=3)
    arrays = []
    for run in ("a", "b"):
        th.manual_seed(0)
        diffusion = SegmentDiffusion(n, O, 3, normaliser.generated, dim=8, dim_mults=(1,), n_timesteps=10,
                                     returns_scale=10.0, device=device, seed=0)
        dynamics = DynamicsModels(n, O, A, hidden=16, generated=normaliser.generated, device=device)
        sampler = GuidedSampler(diffusion, "compose", 1.2, "ddim", 5)
        out = tmp_path / run / "gen.h5"
        summary = generate_dataset(out, path, sampler, dynamics, normaliser, ClimbingHooks(), settings, "codi",
                                   device=device)
        assert summary["counters"]["episodes"] == 4 and summary["pass_rate"] == 1.0
        arrays.append(OfflineDataset.load(out, expect_env="matrix_game").arrays())
    for key in arrays[0]:
        np.testing.assert_array_equal(arrays[0][key], arrays[1][key], err_msg=key)
    assert (arrays[0]["obs"][:, 0] == 0).all() and np.abs(arrays[0]["obs"]).max() <= 1 + 1e-6
