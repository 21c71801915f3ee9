"""The oracle-episode check of a potential (shapers/lca/oracle_check.py): F_i along the env's oracle episodes against
its pair oracle, per group and per sub-goal, reproducible, and skipped (None) for an env without the hooks."""
from types import SimpleNamespace

import pytest
from lca_helpers import oracle_pairs, random_potential

from envs import make_env
from shapers.lca.oracle_check import describe, oracle_episode_check
from shapers.lca.train import LoadedPotential, TrainSettings, check_episodes, load_artifact, train_potentials
from utils.config import build_config


def two_switch():
    return make_env("two_switch", **build_config("ippo", "two_switch", {})["env_args"])


def test_a_potential_trained_on_oracle_pairs_rewards_the_oracle_episodes_and_its_negation_does_not():
    env = two_switch()
    lca = build_config("ippo", "two_switch", {})["lca"]
    result = train_potentials(oracle_pairs(env, 600, seed=0), TrainSettings.from_args(type("A", (), {"lca": lca})))
    meta = {"encoder": result.spec}
    good = oracle_episode_check(LoadedPotential("", meta, result.models, result.scales, ""), env, episodes=5)
    flipped = {name: -scale for name, scale in result.scales.items()}
    bad = oracle_episode_check(LoadedPotential("", meta, result.models, flipped, ""), env, episodes=5)
    assert good["oracle_success_rate"] == 1.0 and good["judged"] == bad["judged"] > 20
    assert good["sign_agreement"] >= 0.8, good  # measured 0.94 (103 judged moves)
    # negating F swaps right and wrong on every judged move (no move has F exactly 0 here)
    assert abs(good["sign_agreement"] + bad["sign_agreement"] - 1) < 1e-9
    assert set(good["by_group"]) == {"agent"} and good["by_subgoal"]
    assert all(key.startswith("agent: ") for key in good["by_subgoal"])
    assert sum(s["moves"] for s in good["by_subgoal"].values()) == good["moves"]
    assert "lowest sub-goal" in describe(good)


def test_the_check_is_reproducible_and_seeded(tmp_path):
    env = two_switch()
    folder = random_potential(str(tmp_path / "p"), env.get_obs_size(), n_agents=2, groups=["agent"],
                              identity_dims=[6, 7], env="two_switch")
    potential = load_artifact(folder)
    first = oracle_episode_check(potential, env, episodes=3, seed=4)
    assert first == oracle_episode_check(potential, two_switch(), episodes=3, seed=4)
    assert first["seed"] == 4 and first["episodes"] == 3 and 0 <= first["sign_agreement"] <= 1


def test_pistonball_oracle_without_tie_breaking_randomness(tmp_path):
    env = make_env("pistonball", **build_config("ippo", "pistonball", {})["env_args"])
    folder = random_potential(str(tmp_path / "p"), env.get_obs_size(), n_agents=env.n_agents, groups=["piston"],
                              env="pistonball")
    check = oracle_episode_check(load_artifact(folder), env, episodes=1)
    assert check["judged"] > 0 and set(check["by_group"]) == {"piston"} and check["by_subgoal"] == {}


def test_an_env_without_an_oracle_is_not_checked(tmp_path):
    env = make_env("matrix_game", **build_config("qmix", "matrix_game", {})["env_args"])
    folder = random_potential(str(tmp_path / "p"), env.get_obs_size(), n_agents=env.n_agents, env="matrix_game")
    assert oracle_episode_check(load_artifact(folder), env, episodes=2) is None
    assert "not checked" in describe(None)


def test_check_episodes_must_be_a_whole_number():
    assert check_episodes(SimpleNamespace(lca={"check_episodes": 0})) == 0
    for bad in (-1, 2.5, True, "20"):
        with pytest.raises(ValueError, match="lca.check_episodes must be a whole number"):
            check_episodes(SimpleNamespace(lca={"check_episodes": bad}))
