"""Env arguments are checked before an env is built (envs.check_env_args, run by src/main.py before the run starts):
unknown ones are named with the valid ones and the closest; epymarl's gymma ids point to our env configs."""
import pytest

from envs import check_env_args, make_env
from envs.multiagentenv import EnvArgumentError
from utils.config import ConfigError, available, build_config

LBF_KEY = "lbforaging:Foraging-8x8-2p-2f-coop-v3"


@pytest.mark.parametrize("env_config", [e for e in available("envs") if e != "gymma"])  # gymma: no key by default
def test_every_env_config_passes_the_check(env_config):
    cfg = build_config("qmix", env_config)
    check_env_args(cfg["env"], cfg["env_args"])


def test_a_typo_is_named_with_the_valid_arguments_and_the_closest():
    with pytest.raises(EnvArgumentError, match=r"^unknown env argument 'time_limt' for gymma; valid: key, time_limit, "
                                               r".*sight.*; did you mean 'time_limit'\?$"):
        check_env_args("gymma", {"key": LBF_KEY, "time_limt": 20})
    with pytest.raises(EnvArgumentError, match="'time_limt' for lbf; valid: key, time_limit, state, .*'time_limit'"):
        check_env_args("lbf", {"key": "Foraging-5x5-2p-1f-v3", "time_limt": 20})
    with pytest.raises(EnvArgumentError, match="for matrix_game; valid: game, episode_limit, penalty; did you mean"):
        check_env_args("matrix_game", {"episode_limt": 3})
    with pytest.raises(EnvArgumentError, match="did you mean 'map_name'"):
        check_env_args("smax", {"map": "3m"})
    with pytest.raises(EnvArgumentError, match=r"arguments 'a', 'time_limt' for gymma.*'time_limit' \(for 'time_l"):
        check_env_args("gymma", {"key": LBF_KEY, "a": 1, "time_limt": 20})


def test_it_is_a_config_error_and_a_type_error():
    assert issubclass(EnvArgumentError, ConfigError) and issubclass(EnvArgumentError, TypeError)


def test_gymma_takes_the_arguments_of_the_env_its_key_names():
    check_env_args("gymma", {"key": LBF_KEY, "time_limit": 20, "sight": 2, "seed": 1, "common_reward": True})
    check_env_args("lbf", {"key": "Foraging-5x5-2p-1f-v3", "state": "obs", "penalty": 0.1})
    with pytest.raises(EnvArgumentError, match="time_limit, not max_episode_steps"):
        check_env_args("gymma", {"key": LBF_KEY, "max_episode_steps": 5})
    with pytest.raises(EnvArgumentError, match="gymma needs env_args.key"):
        check_env_args("gymma", {})
    with pytest.raises(EnvArgumentError, match="does not know env id"):
        check_env_args("gymma", {"key": "lbforaging:Foraging-8x8-2p-2f-coop-v9"})


def test_the_constructors_give_the_same_message():
    with pytest.raises(TypeError, match="unknown env argument 'time_limt' for gymma; .*did you mean 'time_limit'"):
        make_env("gymma", key=LBF_KEY, time_limt=20)
    with pytest.raises(TypeError, match="unknown env argument 'time_limt' for lbf; .*did you mean 'time_limit'"):
        make_env("lbf", key="Foraging-5x5-2p-1f-v3", time_limt=20)


@pytest.mark.parametrize("key,config", [
    ("pz-mpe-simple-spread-v3", "mpe_spread"), ("pz-mpe-simple-adversary-v3", "mpe_adversary"),
    ("pz-mpe-simple-tag-v3", "mpe_tag"), ("mpe:SimpleSpread-v0", "mpe_spread"),
])
def test_epymarl_gymma_ids_point_to_our_env_configs(key, config):
    with pytest.raises(EnvArgumentError, match=rf"'{key}' is epymarl's id .*use --env-config={config} instead"):
        check_env_args("gymma", {"key": key, "time_limit": 25})
    assert config in available("envs")


def test_unknown_env_names_the_valid_ones():
    with pytest.raises(EnvArgumentError, match="unknown env 'mpee'. Did you mean: mpe"):
        check_env_args("mpee", {})


def test_a_factory_taking_any_argument_is_not_checked():
    from envs import REGISTRY
    from helpers import CountdownEnv  # noqa: F401 (registers "countdown", which takes **reward_settings)

    assert "countdown" in REGISTRY
    check_env_args("countdown", {"anything": 1})
