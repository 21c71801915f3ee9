"""scripts/codi_probe.py: LBF's collection rule and the nearest-food snap on real episodes, and the script end to end
on a tiny madiff_like artifact trained through src/main.py."""
import glob
import importlib.util
import os
import subprocess
import sys

import numpy as np

from envs import make_env
from helpers import run_main, write_random_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "codi_probe.py")
TINY = ["diffusion_dim=8", "diffusion_dim_mults=[1]", "diffusion_timesteps=10", "sampling_steps=5",
        "augment_batch_size=16", "augment_train_steps=20", "augment_log_interval=10", "augment_save_interval=20",
        "dynamics_hidden=16", "augment_episodes=2", "delta=1e9", "generation_batch_size=2", "use_tensorboard=False",
        "segment_horizon=4", "augment_valid_fraction=0.25", "use_cuda=False", "env_args.time_limit=12"]


def load_probe():
    spec = importlib.util.spec_from_file_location("codi_probe", SCRIPT)
    sys.path.insert(0, os.path.dirname(SCRIPT))  # its _bootstrap
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collecting_episode(env, seed):
    """Obs [T+1, n, O] and states [T+1, S] of one episode of a scripted team that walks to the foods and loads."""
    rng = np.random.default_rng(seed)
    env.seed(seed)
    obs, states = [np.array(env.reset()[0])], [np.array(env.get_state())]
    for _ in range(env.episode_limit):
        acts = [int(a) for a in (rng.integers(0, 6, env.n_agents) if rng.random() < 0.5 else np.full(env.n_agents, 5))]
        _, done, info = env.step(acts)
        obs.append(np.array(env.get_obs()))
        states.append(np.array(env.get_state()))
        if done or info.get("episode_limit"):
            break
    return np.stack(obs), np.stack(states)


def test_lbfs_rule_holds_on_real_collections_and_not_on_a_food_that_vanishes_alone():
    probe = load_probe()
    env = make_env("lbf", key="Foraging-8x8-2p-2f-coop-v3", time_limit=50, state="qllm")
    n, m = env.n_agents, env.n_food
    collected = refused = 0
    for seed in range(40):
        obs, _ = collecting_episode(env, seed)
        state = env.state_from_obs(obs[None], np.zeros((1, len(obs), n)))
        levels = state[0, :, 3 * n + 2: 3 * n + 3 * m: 3]
        valid = np.ones((1, len(obs) - 1), bool)
        assert probe.lawful_collections(state, n, m, valid).all(), seed
        if (levels[-1] == 0).any():
            collected += 1
            tampered = state.copy()  # the first step's foods gone at step 1, wherever the agents are
            first_food = 3 * n
            tampered[0, 1:, first_food: first_food + 3] = (-1, -1, 0)
            far = np.abs(state[0, 0, : 3 * n].reshape(n, 3)[:, :2] - state[0, 0, first_food: first_food + 2]).sum(-1)
            if (far > 1).all():
                assert not probe.lawful_collections(tampered, n, m, valid).any(), seed
                refused += 1
    assert collected >= 3 and refused >= 3  # the scripted team collects food in some episodes
    # loaders next to the food but too weak: its level above the sum of theirs
    weak = collect_once(env, probe)
    assert weak is not None
    state, t, k = weak
    assert probe.lawful_collections(state, n, m, np.ones((1, state.shape[1] - 1), bool)).all()
    state[0, : t + 1, 3 * n + 3 * k + 2] = 100  # the food's level before it went
    assert not probe.lawful_collections(state, n, m, np.ones((1, state.shape[1] - 1), bool)).any()
    # a transition that is not judged (past the episode, or past a terminal) does not count
    judged = np.ones((1, state.shape[1] - 1), bool)
    judged[0, t:] = False
    assert probe.lawful_collections(state, n, m, judged).all()


def collect_once(env, probe):
    """(state [1, T+1, S], t, k): a scripted episode's state in which food k goes between steps t and t+1."""
    n, m = env.n_agents, env.n_food
    for seed in range(40):
        obs, _ = collecting_episode(env, seed)
        state = env.state_from_obs(obs[None], np.zeros((1, len(obs), n)))
        levels = state[0, :, 3 * n + 2: 3 * n + 3 * m: 3]
        went = np.argwhere((levels[:-1] > 0) & (levels[1:] == 0))
        if len(went):
            return state, int(went[0, 0]), int(went[0, 1])
    return None


def test_judged_transitions_are_the_episodes_up_to_its_first_terminal():
    """As stitching judges: the transition into the first terminal observation counts, later ones do not; a real
    segment's step_valid[:, h] says the transition h -> h+1 exists (the last column is not a transition)."""
    probe = load_probe()
    terminal = np.array([[False, False, False], [False, True, False], [True, True, False]])
    np.testing.assert_array_equal(probe.judged_transitions(terminal),
                                  [[True, True, True], [True, True, False], [True, False, False]])
    step_valid = np.array([[True, True, False, False], [True, True, True, True], [True, True, True, False]])
    np.testing.assert_array_equal(probe.judged_transitions(np.zeros((3, 3), bool), step_valid),
                                  [[True, True, False], [True, True, True], [True, True, True]])


def test_the_nearest_food_snap_keeps_a_drifted_food_that_the_exact_snap_drops():
    probe = load_probe()
    env = make_env("lbf", key="Foraging-8x8-2p-2f-coop-v3", time_limit=50, state="qllm")
    snap = probe.nearest_food_snap(env)
    obs, _ = collecting_episode(env, 0)
    assert np.array_equal(snap(obs[1:], first=obs[0]), obs[1:])  # the identity on real steps
    drifted = obs[1:4].copy()
    drifted[:, :, 0] += 0.8  # the first food slot's row, in every view, 0.8 cells off its cell
    assert obs[0, 0, 2] > 0 and (obs[1:4, 0, 2] > 0).all()  # the first food is there at steps 0-3
    assert np.array_equal(snap(drifted, first=obs[0]), obs[1:4])
    assert (env.snap_obs(drifted, first=obs[0])[:, 0, 2:3 * env.n_food:3] == 0).any()


def test_the_probe_runs_on_a_tiny_artifact(tmp_path):
    path, _ = write_random_dataset(str(tmp_path / "lbf.h5"), "lbf_8x8_2p_2f_coop", 24, env_args={"time_limit": 12})
    run_main(tmp_path / "results", "madiff_like", "lbf_8x8_2p_2f_coop", f"offline_dataset={path}", *TINY)
    (artifact,) = glob.glob(str(tmp_path / "results" / "augment" / "madiff_like" / "*" / "*"))
    out = tmp_path / "probe.md"
    done = subprocess.run([sys.executable, SCRIPT, artifact, "--segments", "8", "--seeds", "0", "--delta", "0.5",
                           "--set", "sampling_steps=5", "--out", str(out)],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == ["real (held out)", "raw", "snap_obs", "snap, nearest",
                                                      "snap every step", "snap every step, nearest"]
    assert all(r.split(" | ")[1] == "8" for r in rows[1:])  # 8 first observations x 1 seed per generated row
