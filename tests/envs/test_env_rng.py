"""Each env family's RNG state (get_rng_state / set_rng_state, for exact resume) survives torch.save and
torch.load(weights_only=True), as checkpoints store it, and an env given it plays the episode the env that gave it
would have played next, whatever seed it was built with."""
import io
import random

import numpy as np
import pytest
import torch as th

from envs import make_env
from envs.multiagentenv import MultiAgentEnv
from envs.rng import (
    BIT_GENERATORS,
    EnvRngUnsupported,
    env_rng_state,
    generator_state,
    make_generator,
    make_random,
    random_state,
    restore_env_rng_state,
)
from helpers import require_extra

FAMILIES = {  # name -> (env, env_args): one per family, the stochastic variants
    "lbf": ("lbf", {"key": "Foraging-5x5-2p-1f-v3", "time_limit": 8}),
    "mpe_spread": ("mpe", {"scenario": "spread", "max_cycles": 5}),
    "mpe_tag": ("mpe", {"scenario": "tag", "max_cycles": 5}),  # its prey act from the env's own RNG too
    "pistonball": ("pistonball", {"max_cycles": 5}),
    "two_switch": ("two_switch", {}),
    "victim_rubble": ("victim_rubble", {"random_free_objects": True}),
    "smax": ("smax", {"map_name": "3m", "episode_limit": 5}),
}


def through_a_checkpoint(value):
    buffer = io.BytesIO()
    th.save(value, buffer)
    buffer.seek(0)
    return th.load(buffer, weights_only=True)


def play(env, steps=5):
    """One episode's start and up to `steps` steps of actions that depend on nothing but the observations: states
    and rewards, stacked."""
    _, state = env.reset()
    states, rewards = [np.asarray(state, dtype=np.float64).copy()], []
    for t in range(steps):
        avail = np.asarray(env.get_avail_actions())
        actions = [int(np.flatnonzero(a)[(t + i) % int(a.sum())]) for i, a in enumerate(avail)]
        reward, terminated, info = env.step(actions)
        states.append(np.asarray(env.get_state(), dtype=np.float64).copy())
        rewards.append(np.asarray(reward, dtype=np.float64))
        if terminated or info.get("episode_limit"):
            break
    return np.concatenate([np.concatenate(states), np.ravel(rewards)])


def build(family, seed):
    name, env_args = FAMILIES[family]
    if name == "smax":
        require_extra("jaxmarl", "./install.sh smax")
    return make_env(name, seed=seed, **env_args)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_rng_state_round_trips_and_replays_the_next_episode(family):
    env = build(family, seed=1)
    play(env)
    saved = through_a_checkpoint(env.get_rng_state())
    expected = [play(env), play(env)]  # what the run that saved the state plays next

    other = build(family, seed=7)
    play(other)
    assert not np.array_equal(play(other), expected[0])  # the family is stochastic: another seed, other episodes
    other.set_rng_state(saved)
    assert all(np.array_equal(play(other), e) for e in expected)


@pytest.mark.parametrize("family", ["lbf", "mpe_spread", "pistonball"])
def test_a_seed_not_yet_taken_is_part_of_the_state(family):
    """Before its first reset an env holds the seed that reset takes: the state carries it, and the seed of the env
    given the state is dropped."""
    env = build(family, seed=1)
    saved = through_a_checkpoint(env.get_rng_state())
    expected = play(env)
    other = build(family, seed=7)
    other.set_rng_state(saved)
    assert np.array_equal(play(other), expected)


def test_a_deterministic_env_has_no_state():
    env = make_env("matrix_game")
    assert env.get_rng_state() is None
    env.set_rng_state(None)
    assert restore_env_rng_state(env, env_rng_state(env)) is None


def test_an_env_without_the_methods_is_named_not_fatal():
    class Plain(MultiAgentEnv):
        pass

    env = Plain()
    with pytest.raises(EnvRngUnsupported, match="env Plain cannot save its RNG state"):
        env.get_rng_state()
    state = through_a_checkpoint(env_rng_state(env))
    assert "env Plain cannot save its RNG state" in restore_env_rng_state(env, state)


def test_starcraft_says_it_cannot():
    from envs.smac import SMACEnv

    env = SMACEnv.__new__(SMACEnv)  # no game needed: the answer does not depend on it
    env.map_name = "3m"
    why = env_rng_state(env)["unsupported"]
    assert "SMACEnv cannot save its RNG state" in why and "StarCraft II" in why
    assert restore_env_rng_state(env, {"key": [1, 2]}) and restore_env_rng_state(env, {"unsupported": why}) == why


def test_gfootball_engine_seeds_round_trip():
    require_extra("gfootball", "./install.sh football, or ./install_gfootball.sh")
    env = make_env("gfootball", scenario="academy_3_vs_1_with_keeper", time_limit=5, seed=1)
    env.reset()
    saved = through_a_checkpoint(env.get_rng_state())
    seeds = [env._episode_seed() for _ in range(3)]
    other = make_env("gfootball", scenario="academy_3_vs_1_with_keeper", time_limit=5, seed=7)
    other.set_rng_state(saved)
    assert [other._episode_seed() for _ in range(3)] == seeds


@pytest.mark.parametrize("name", BIT_GENERATORS)
def test_numpy_generators_round_trip_as_plain_values(name):
    generator = np.random.Generator(getattr(np.random, name)(5))
    generator.random(3)
    saved = through_a_checkpoint(generator_state(generator))
    copy = make_generator(saved)
    assert np.array_equal(copy.random(4), generator.random(4)) and copy.integers(2**62) == generator.integers(2**62)
    assert make_generator(None) is None and generator_state(None) is None


def test_pcg64s_128_bit_ints_survive_a_weights_only_load():
    state = generator_state(np.random.default_rng(3))
    assert state["state"]["state"] >= 2**64 or state["state"]["inc"] >= 2**64
    assert through_a_checkpoint(state) == state


def test_python_random_round_trips():
    rng = random.Random(4)
    rng.random()
    copy = make_random(through_a_checkpoint(random_state(rng)))
    assert [copy.random() for _ in range(3)] == [rng.random() for _ in range(3)]


def test_a_bit_generator_a_checkpoint_names_is_checked():
    with pytest.raises(ValueError, match="unknown numpy bit generator 'os.system'"):
        make_generator({"bit_generator": "os.system", "state": {}})
