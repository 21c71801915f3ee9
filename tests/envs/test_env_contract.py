"""Every env config in config/envs honours the pymarl env contract and runs a short QMIX job.

Parametrised over the YAML files, so a new config is covered without touching this file; the
only per-family knowledge here is how to make episodes short and which configs need
StarCraft II (checked for their install message instead).
"""
import importlib.util

import numpy as np
import pytest

from envs import make_env
from envs.description import check_schema
from helpers import require_extra, run_main
from utils.config import available, load_yaml

# env arg that bounds an episode, per env family, set low so every test episode is short
SHORT = {
    "matrix_game": {"episode_limit": 6},
    "lbf": {"time_limit": 15},
    "gymma": {"time_limit": 15},
    "mpe": {"max_cycles": 10},
    "pistonball": {"max_cycles": 15},
    "gfootball": {"time_limit": 20},
    "smax": {"episode_limit": 10},
    "two_switch": {"episode_limit": 15},
    "victim_rubble": {"episode_limit": 15},
}
NEEDS_STARCRAFT = {"sc2", "sc2v2"}
# env family -> (optional package, how to install it); skipped when missing, except in CI
OPTIONAL = {"smax": ("jaxmarl", "./install.sh smax"), "gfootball": ("gfootball", "./install.sh football")}
# gymma.yaml has no key on purpose (the user names one); the contract test gives it LBF's
KEYLESS = {"gymma": {"key": "lbforaging:Foraging-5x5-2p-1f-v3"}}


def env_config(name):
    return load_yaml("envs", name)


def starcraft_installed():
    return importlib.util.find_spec("smac") is not None and importlib.util.find_spec("smac.env") is not None


def short_args(cfg):
    return {**cfg["env_args"], **KEYLESS.get(cfg["env"], {}), **SHORT.get(cfg["env"], {})}


def build(name, seed=0):
    cfg = env_config(name)
    if cfg["env"] in NEEDS_STARCRAFT and not starcraft_installed():
        pytest.skip("StarCraft II / smac not installed (the install message is tested in test_starcraft_configs...)")
    if cfg["env"] in OPTIONAL:
        require_extra(*OPTIONAL[cfg["env"]])
    return make_env(cfg["env"], **short_args(cfg), seed=seed, common_reward=True, reward_scalarisation="sum")


def random_episode(env, rng, max_steps=None):
    """Play random available actions; return the per-step records and the end."""
    obs, state = env.reset()
    info = env.get_env_info()
    n, n_actions = env.n_agents, info["n_actions"]
    steps = []
    for t in range(max_steps or env.episode_limit):
        avail = np.asarray(env.get_avail_actions())
        assert avail.shape == (n, n_actions) and set(np.unique(avail)) <= {0, 1}
        assert avail.sum(1).min() >= 1, f"step {t}: an agent has no available action"
        actions = [int(rng.choice(np.flatnonzero(a))) for a in avail]
        reward, terminated, step_info = env.step(actions)
        obs, state = np.asarray(env.get_obs()), np.asarray(env.get_state())
        steps.append((actions, reward, terminated, dict(step_info), obs.copy(), state.copy()))
        if terminated or step_info.get("episode_limit"):
            break
    return steps


@pytest.mark.parametrize("name", available("envs"))
def test_random_episode_honours_the_env_contract(name):
    env = build(name)
    assert env.describe_task()  # prompts are built before any episode runs
    info = env.get_env_info()
    n, limit = env.n_agents, env.episode_limit
    assert info["n_agents"] == n >= 1 and info["episode_limit"] == limit >= 1
    obs, state = env.reset()
    assert np.asarray(obs).shape == (n, info["obs_shape"]) and np.asarray(state).shape == (info["state_shape"],)
    steps = random_episode(env, np.random.default_rng(0))
    assert 1 <= len(steps) <= limit
    for _actions, reward, terminated, step_info, obs, state in steps:
        assert obs.shape == (n, info["obs_shape"]) and obs.dtype == np.float32 and np.isfinite(obs).all()
        assert state.shape == (info["state_shape"],) and state.dtype == np.float32 and np.isfinite(state).all()
        assert isinstance(reward, float) and np.isfinite(reward)
        assert isinstance(terminated, (bool, np.bool_))
        assert all(isinstance(v, (bool, int, float, np.number, np.bool_)) for v in step_info.values()), step_info
    *_, (_, _, terminated, last_info, _, _) = steps
    if not terminated:  # the episode ran out of time: a truncation, flagged as such, exactly at the limit
        assert last_info.get("episode_limit") is True and len(steps) == limit
    else:
        assert not last_info.get("episode_limit")
    # self-description for LLM prompts
    check_schema(env.state_schema(), info["state_shape"])
    assert len(env.action_meanings()) == info["n_actions"]
    prompt = env.describe_task()
    assert env.task_summary() in prompt and env.reward_description() in prompt
    env.close()


@pytest.mark.parametrize("name", available("envs"))
def test_seeded_episodes_are_reproducible(name):
    runs = []
    for _ in range(2):
        env = build(name, seed=7)
        runs.append(random_episode(env, np.random.default_rng(1), max_steps=10)
                    + random_episode(env, np.random.default_rng(2), max_steps=5))  # a second episode too
        env.close()
    a, b = runs
    assert len(a) == len(b)
    for (act_a, r_a, term_a, _, obs_a, state_a), (act_b, r_b, term_b, _, obs_b, state_b) in zip(a, b):
        assert act_a == act_b and r_a == r_b and term_a == term_b
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(state_a, state_b)


@pytest.mark.parametrize("name", available("envs"))
def test_qmix_smoke_run(tmp_path, name):
    cfg = env_config(name)
    build(name).close()  # skips where build skips
    env_args = [f"env_args.{k}={v!r}" for k, v in {**KEYLESS.get(cfg["env"], {}), **SHORT.get(cfg["env"], {})}.items()]
    run_main(tmp_path, "qmix", name, "t_max=60", "test_interval=30", "test_nepisode=1", "log_interval=30",
             "runner_log_interval=30", "learner_log_interval=30", "batch_size=2", "buffer_size=4",
             "save_model=False", "use_tensorboard=False", *env_args)


def test_starcraft_configs_fail_clearly_without_starcraft():
    if starcraft_installed():
        pytest.skip("smac is installed here")
    for name in available("envs"):
        cfg = env_config(name)
        if cfg["env"] in NEEDS_STARCRAFT:
            with pytest.raises(Exception, match="install_sc2.sh"):
                make_env(cfg["env"], **cfg["env_args"], seed=0)


def test_unknown_env_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Did you mean: lbf") as e:
        make_env("lbff")
    for name in ("mpe", "gfootball", "smax", "sc2", "pistonball", "two_switch", "victim_rubble", "matrix_game"):
        assert name in str(e.value)
