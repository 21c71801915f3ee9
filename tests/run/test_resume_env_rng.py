"""Exact resume on stochastic envs: checkpoints hold every env's own RNG state (LBF's placement, MPE's landmarks), so a
run stopped at a checkpoint and resumed equals the uninterrupted run, with the episode runner and with the parallel
runner (whose workers give and take their envs' states). A checkpoint without env RNG states (older) still resumes,
with a warning; an env that cannot save its state is named once."""
import glob
import json
import os

import gymnasium
import numpy as np
import pytest
import torch as th
from test_resume import assert_same

from helpers import run_main, sacred_dir

PPO_FILES = ["agent", "critic", "agent_opt", "critic_opt", "learner", "run_state", "buffer"]
# with the buffer saved: a checkpoint between two updates (an odd number of episodes here) keeps the episode the next
# update trains on, else the resumed run's on-policy batches are made of other episodes
COMMON = ["t_max=120", "test_nepisode=2", "test_interval=30", "log_interval=30", "runner_log_interval=30",
          "learner_log_interval=30", "save_model_interval=60", "batch_size=2", "buffer_size=2",
          "save_replay_buffer=True", "use_tensorboard=False"]
ENVS = {  # env config -> (its Sacred folder's label, a short episode)
    "lbf": ("Foraging-5x5-2p-1f-v3", ["env_args.time_limit=6"]),
    "mpe_spread": ("spread_N3", ["env_args.max_cycles=6"]),
}
RUNNERS = {
    "episode": ["runner=episode", "batch_size_run=1"],
    "parallel": ["runner=parallel", "batch_size_run=2", "n_workers=1"],  # one env local, one in a worker
}


def checkpoint(models, step):
    files = {f: th.load(os.path.join(models, str(step), f"{f}.th"), weights_only=True) for f in PPO_FILES}
    files["run_state"].pop("sacred_run")
    files["run_state"].pop("config")  # checkpoint_path differs
    return files


def info(results, env):
    with open(os.path.join(sacred_dir(results, "mappo", ENVS[env][0]), "info.json")) as f:
        return json.load(f)


def series(info, key):
    return dict(zip(info[f"{key}_T"], info[key]))


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("env", ENVS)
def test_a_resumed_run_on_a_stochastic_env_equals_the_uninterrupted_run(tmp_path, env, runner):
    settings = [*COMMON, *ENVS[env][1], *RUNNERS[runner]]
    run_main(tmp_path / "full", "mappo", env, *settings)
    run_main(tmp_path / "part", "mappo", env, *settings, "t_max=60")
    part_models = glob.glob(str(tmp_path / "part" / "models" / "*"))[0]
    stop = max(int(d) for d in os.listdir(part_models) if d.isdigit())
    state = th.load(os.path.join(part_models, str(stop), "run_state.th"), weights_only=True)
    assert len(state["env_rng"]) == int(RUNNERS[runner][1].split("=")[1])
    run_main(tmp_path / "resumed", "mappo", env, *settings, f"checkpoint_path={part_models}")

    full, resumed = info(tmp_path / "full", env), info(tmp_path / "resumed", env)
    for key in ("return_mean", "test_return_mean", "ep_length_mean", "test_ep_length_mean"):
        logged = series(full, key)
        after = series(resumed, key)
        assert after and min(after) > stop, key
        assert all(logged.get(t) == v for t, v in after.items()), key
    # the learner's state and every RNG (the envs' included) at the end: a lost env state changes the episodes, so
    # the observations the networks trained on
    full_models = glob.glob(str(tmp_path / "full" / "models" / "*"))[0]
    end = max(int(d) for d in os.listdir(full_models) if d.isdigit())
    assert end > stop and os.path.isdir(os.path.join(part_models, str(end)))
    assert_same(checkpoint(full_models, end), checkpoint(part_models, end))


def test_a_checkpoint_without_env_rng_states_resumes_with_a_warning(tmp_path, capsys):
    """Checkpoints from before env RNG states were saved load, and say that the episodes after the resume differ."""
    settings = [*COMMON, *ENVS["lbf"][1], *RUNNERS["episode"]]
    run_main(tmp_path / "part", "mappo", "lbf", *settings, "t_max=60")
    models = glob.glob(str(tmp_path / "part" / "models" / "*"))[0]
    stop = max(int(d) for d in os.listdir(models) if d.isdigit())
    file = os.path.join(models, str(stop), "run_state.th")
    state = th.load(file, weights_only=True)
    del state["env_rng"]
    th.save(state, file)
    capsys.readouterr()
    run_main(tmp_path / "resumed", "mappo", "lbf", *settings, f"checkpoint_path={models}")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "env RNG" in line]
    assert len(warnings) == 1 and "episodes after the resume differ" in warnings[0]


def test_an_env_that_cannot_save_its_rng_is_named_once(tmp_path, capsys, monkeypatch):
    """An env without get_rng_state (here: LBF made to lack it) is named at the first checkpoint and on resume; the
    run and the resume go on."""
    from envs.gymma import GymmaWrapper
    from envs.multiagentenv import MultiAgentEnv

    monkeypatch.setattr(GymmaWrapper, "get_rng_state", MultiAgentEnv.get_rng_state)
    monkeypatch.setattr(GymmaWrapper, "set_rng_state", MultiAgentEnv.set_rng_state)
    settings = [*COMMON, *ENVS["lbf"][1], *RUNNERS["parallel"]]
    capsys.readouterr()
    run_main(tmp_path / "part", "mappo", "lbf", *settings, "t_max=60")  # three checkpoints: 6, 66 and the end's
    named = [line for line in capsys.readouterr().err.splitlines() if "cannot save its RNG state" in line]
    assert len(named) == 1 and "env ForagingEnv (lbforaging:Foraging-5x5-2p-1f-v3)" in named[0]
    assert "plays other episodes" in named[0]
    models = glob.glob(str(tmp_path / "part" / "models" / "*"))[0]
    run_main(tmp_path / "resumed", "mappo", "lbf", *settings, "t_max=90", f"checkpoint_path={models}")
    named = [line for line in capsys.readouterr().err.splitlines() if "cannot save its RNG state" in line]
    assert len(named) == 2 and "episodes after the resume differ" in named[0]  # then the resumed run's first save


def test_an_on_policy_checkpoint_between_two_updates_without_its_buffer_warns(tmp_path, capsys):
    """Without save_replay_buffer a checkpoint after an odd number of episodes (batch_size 2) loses the episode the
    next update would train on: the resume says so."""
    settings = [*[s for s in COMMON if not s.startswith("save_replay_buffer")], *ENVS["mpe_spread"][1],
                *RUNNERS["episode"]]
    run_main(tmp_path / "part", "mappo", "mpe_spread", *settings, "t_max=60")  # 11 episodes: 1 since the last update
    models = glob.glob(str(tmp_path / "part" / "models" / "*"))[0]
    capsys.readouterr()
    run_main(tmp_path / "resumed", "mappo", "mpe_spread", *settings, "t_max=90", f"checkpoint_path={models}")
    err = capsys.readouterr().err
    assert "came between two updates: the 1 episode(s) since the last update are lost" in err
    assert "env RNG" not in err and "cannot save its RNG state" not in err


def lbf_dataset(path, n=8, limit=6):
    """n LBF-shaped episodes of random observations and actions (all available), written by the real DatasetWriter:
    enough for BC to train on; what matters here is the test episodes it plays on the stochastic env."""
    import numpy as np

    from helpers import make_ctx
    from offline import DatasetWriter

    ctx = make_ctx("bc", "lbf", env_args={"time_limit": limit})
    info = ctx.runner.get_env_info()
    a, na, T1 = info["n_agents"], info["n_actions"], limit + 1
    rng = np.random.default_rng(0)
    arrays = {"obs": rng.random((n, T1, a, info["obs_shape"]), dtype=np.float32),
              "state": rng.random((n, T1, info["state_shape"]), dtype=np.float32),
              "actions": rng.integers(0, na, (n, T1, a, 1)), "avail_actions": np.ones((n, T1, a, na), np.uint8),
              "reward": np.zeros((n, T1, 1), np.float32), "terminated": np.zeros((n, T1, 1), np.uint8),
              "filled": np.ones((n, T1, 1), np.uint8)}
    with DatasetWriter(str(path), info, ctx.args.env, ctx.args.env_args, vars(ctx.args)) as w:
        w.add_arrays(arrays, qualities="poor")
    ctx.runner.close_env()
    return str(path)


def test_a_resumed_offline_run_tests_on_the_same_episodes_as_the_uninterrupted_run(tmp_path):
    """Offline runs test on the runner's envs: their checkpoints hold the envs' RNG states too, so the test episodes
    after a resume are the uninterrupted run's (LBF places food and agents at random)."""
    data = lbf_dataset(tmp_path / "lbf.h5")
    args = [f"offline_dataset={data}", "env_args.time_limit=6", "offline_test_interval=2", "offline_log_interval=2",
            "offline_save_interval=2", "batch_size=4", "test_nepisode=3", "hidden_dim=8", "use_tensorboard=False",
            "save_model=True"]
    run_main(tmp_path / "full", "bc", "lbf", "offline_steps=6", *args)
    run_main(tmp_path / "half", "bc", "lbf", "offline_steps=2", *args)
    (half,) = glob.glob(str(tmp_path / "half" / "models" / "*"))
    assert th.load(os.path.join(half, "2", "run_state.th"), weights_only=True)["env_rng"]
    run_main(tmp_path / "resumed", "bc", "lbf", "offline_steps=6", f"checkpoint_path={half}", *args)

    def tests(results):
        with open(os.path.join(sacred_dir(results, "bc", ENVS["lbf"][0]), "info.json")) as f:
            i = json.load(f)
        return {k: series(i, k) for k in ("test_ep_length_mean", "test_return_mean")}

    full, resumed = tests(tmp_path / "full"), tests(tmp_path / "resumed")
    for key, values in resumed.items():
        assert values == {t: v for t, v in full[key].items() if t > 2}, key


class DiceEnv(gymnasium.Env):
    """A gymnasium two-agent env (not LBF) that draws its observations from a generator of its own, beyond
    np_random: gymma saves np_random only, so a resume of a run on it is not exact."""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Tuple([gymnasium.spaces.Box(0, 1, shape=(2,))] * 2)
        self.action_space = gymnasium.spaces.Tuple([gymnasium.spaces.Discrete(2)] * 2)
        self.own = np.random.default_rng(0)  # the env's own state, which no checkpoint holds

    def _obs(self):
        return tuple(self.own.random(2).astype(np.float32) for _ in range(2))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, actions):
        return self._obs(), [float(self.np_random.random())] * 2, False, False, {}


if "GymmaResumeDice-v0" not in gymnasium.registry:
    gymnasium.register(id="GymmaResumeDice-v0", entry_point=DiceEnv)


def test_a_resume_on_a_gymma_env_other_than_lbf_warns_that_only_np_random_is_saved(tmp_path, capsys):
    """gymma saves a gymnasium env's np_random (and LBF's player positions); an env's own state beyond it is not
    saved, so its checkpoints (once) and a resume from them say the episodes may differ. LBF under gymma: no
    warning (test_a_resumed_run_on_a_stochastic_env_equals_the_uninterrupted_run shows its resume is exact)."""
    settings = [*COMMON, *RUNNERS["episode"], "env_args.time_limit=6"]
    capsys.readouterr()
    run_main(tmp_path / "part", "mappo", "gymma", *settings, "env_args.key=GymmaResumeDice-v0", "t_max=60")
    named = [line for line in capsys.readouterr().err.splitlines() if "saves only its gymnasium np_random" in line]
    assert len(named) == 1 and "env GymmaWrapper (GymmaResumeDice-v0)" in named[0], named
    assert "not other state the env may keep" in named[0] and "plays other episodes" in named[0]
    models = glob.glob(str(tmp_path / "part" / "models" / "*"))[0]
    run_main(tmp_path / "resumed", "mappo", "gymma", *settings, "env_args.key=GymmaResumeDice-v0", "t_max=90",
             f"checkpoint_path={models}")
    named = [line for line in capsys.readouterr().err.splitlines() if "saves only its gymnasium np_random" in line]
    assert len(named) == 2 and "episodes after the resume differ" in named[0]  # then the resumed run's first save
    run_main(tmp_path / "lbf", "mappo", "gymma", *settings, "env_args.key=lbforaging:Foraging-5x5-2p-1f-v3",
             "t_max=60")
    assert "np_random" not in capsys.readouterr().err
