"""shaper=lca in real runs on Two-Switch: both runners store team reward + coef * F_i with F_i = 0 on stay steps, test
episodes are unshaped, and src/main.py trains IPPO with it, records the potential in checkpoints and refuses to
resume with a tampered or changed potential."""
import glob
import json
import os

import pytest
import torch as th
from lca_helpers import random_potential

from envs import make_env
from helpers import make_ctx, run_main, sacred_dir
from utils.config import build_config

TINY = ["t_max=120", "test_interval=60", "test_nepisode=2", "use_tensorboard=False", "log_interval=60",
        "runner_log_interval=60", "learner_log_interval=60", "hidden_dim=8", "env_args.episode_limit=20",
        "batch_size_run=1", "batch_size=2", "buffer_size=2", "runner=episode"]


def two_switch_potential(folder, seed=0, **env_args):
    """A random potential fitting Two-Switch: one model shared by both agents, without the colour one-hot."""
    env_args = {**build_config("ippo", "two_switch", {})["env_args"], **env_args}
    env = make_env("two_switch", **env_args)
    identity = [k for k in range(6, 6 + env.n_agents)]  # ego position and facing (6), then the colour one-hot
    return random_potential(folder, env.get_obs_size(), n_agents=2, groups=["agent"], identity_dims=identity,
                            out_scale=5.0, seed=seed, env="two_switch", env_args=env_args)


@pytest.fixture(scope="module")
def potential(tmp_path_factory):
    return two_switch_potential(str(tmp_path_factory.mktemp("lca") / "potential"), episode_limit=20)


@pytest.mark.parametrize("runner, n", [("episode", 1), ("parallel", 3)])
def test_both_runners_shape_with_the_team_reward_kept_and_stays_zeroed(potential, runner, n):
    ctx = make_ctx("ippo", "two_switch", shaper="lca", lca={"potential": potential, "coef": 100.0},
                   env_args={"episode_limit": 20}, runner=runner, batch_size_run=n, hidden_dim=8)
    try:
        batch = ctx.runner.run()
        test_batch = ctx.runner.run(test_mode=True)
    finally:
        ctx.runner.close_env()
    mask = batch["filled"][:, 1:, 0].bool()
    reward, team = batch["reward"][:, :-1][mask], batch["team_reward"][:, :-1][mask]
    actions = batch["actions"][:, :-1][mask][..., 0]
    obs = batch["obs"]
    F = ctx.shaper.shaping(obs[:, :-1][mask], obs[:, 1:][mask], actions, batch["terminated"][:, :-1][mask][:, 0])
    assert th.allclose(reward, team + 100.0 * F, atol=1e-3)
    stay = actions == 0
    assert stay.any() and (~stay).any() and th.equal(reward[stay], team.expand_as(reward)[stay])
    assert (reward[~stay] != team.expand_as(reward)[~stay]).float().mean() > 0.5  # moves are shaped
    # test episodes keep the env's reward, however large coef is
    test_mask = test_batch["filled"][:, 1:, 0].bool()
    assert th.equal(test_batch["reward"][:, :-1][test_mask],
                    test_batch["team_reward"][:, :-1][test_mask].expand(-1, 2))


@pytest.mark.parametrize("runner, n", [("episode", 1), ("parallel", 3)])
def test_both_runners_log_each_agents_shaped_return_with_a_common_reward(potential, runner, n):
    """common_reward=True (lca_ippo's default) with a shaper: agent_<i>_return_mean is agent i's shaped return on
    training episodes and the team return on (unshaped) test episodes."""
    ctx = make_ctx("ippo", "two_switch", shaper="lca", lca={"potential": potential, "coef": 100.0},
                   env_args={"episode_limit": 20}, runner=runner, batch_size_run=n, hidden_dim=8,
                   runner_log_interval=0, test_nepisode=n)
    try:
        batch = ctx.runner.run()
        ctx.runner.run(test_mode=True)
    finally:
        ctx.runner.close_env()
    stats = {k: v[-1][1] for k, v in ctx.logger.stats.items()}
    shaped = batch["reward"].double().sum(1)  # [B, n agents]
    for i in range(2):
        assert stats[f"agent_{i}_return_mean"] == pytest.approx(shaped[:, i].mean().item())
        assert stats[f"test_agent_{i}_return_mean"] == pytest.approx(stats["test_return_mean"])
    assert stats["shaped_return_mean"] == pytest.approx(shaped.sum(-1).mean().item())
    assert stats["agent_0_return_mean"] != pytest.approx(stats["agent_1_return_mean"])  # the shaping differs
    assert "agent_0_env_return_mean" not in stats  # the env's per-agent return is the team's: return_mean


def test_with_per_agent_env_rewards_the_shaped_and_the_env_return_of_each_agent_are_logged(potential):
    ctx = make_ctx("ippo", "two_switch", shaper="lca", lca={"potential": potential, "coef": 100.0},
                   common_reward=False, env_args={"episode_limit": 20}, runner="episode", batch_size_run=1,
                   hidden_dim=8, runner_log_interval=0)
    try:
        batch = ctx.runner.run()
    finally:
        ctx.runner.close_env()
    stats = {k: v[-1][1] for k, v in ctx.logger.stats.items()}
    # the runner adds the steps' float32 rewards up in float64, the batch's sum is float32 (1e-6 apart seen)
    assert [stats[f"agent_{i}_return_mean"] for i in range(2)] == pytest.approx(batch["reward"].sum(1)[0].tolist(),
                                                                                 rel=1e-5)
    env = [stats[f"agent_{i}_env_return_mean"] for i in range(2)]
    assert sum(env) == pytest.approx(stats["return_mean"])  # reward_scalarisation: sum


def test_ippo_trains_with_it_and_refuses_a_changed_potential_on_resume(tmp_path, potential, capfd):
    run_main(tmp_path, "ippo", "two_switch", "shaper=lca", f"lca.potential={potential}", "save_model=True",
             "save_model_interval=60", *TINY)
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "ippo", "two_switch"), "info.json")))
    assert "shaped_return_mean" in info and "test_return_mean" in info
    checkpoint = glob.glob(os.path.join(tmp_path, "models", "*"))[0]
    # the same potential resumes; another one (same env) is refused naming both hashes
    run_main(tmp_path / "resume", "ippo", "two_switch", "shaper=lca", f"lca.potential={potential}",
             f"checkpoint_path={checkpoint}", "save_model=False", *TINY, "t_max=180")
    other = two_switch_potential(str(tmp_path / "other"), seed=1, episode_limit=20)
    capfd.readouterr()
    run_main(tmp_path / "changed", "ippo", "two_switch", "shaper=lca", f"lca.potential={other}",
             f"checkpoint_path={checkpoint}", "save_model=False", *TINY, "t_max=180", expect=2)  # a config error
    hashes = [json.load(open(os.path.join(f, "meta.json")))["potential_sha256"] for f in (potential, other)]
    assert f"trained with the LCA potential {hashes[0]}" in capfd.readouterr().err and hashes[1] != hashes[0]


def test_the_pipeline_rankings_potentials_rl(tmp_path):
    """--config=lca_label (noisy oracle, K = 4) -> --config=lca_potential -> IPPO with shaper=lca, all through main."""
    rankings = str(tmp_path / "rankings.h5")
    run_main(tmp_path, "lca_label", "two_switch", "labeler=noisy_oracle", "oracle_accuracy=0.75", "lca.queries=4",
             "lca.n_pairs=300", f"label_out={rankings}", "env_args.episode_limit=20")
    run_main(tmp_path, "lca_potential", "two_switch", f"lca.rankings={rankings}", "env_args.episode_limit=20")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "lca_potential", "two_switch"), "info.json")))
    shaped = info["lca_potential"]
    meta = json.load(open(os.path.join(shaped["folder"], "meta.json")))
    (group,) = meta["encoder"]["groups"]  # Two-Switch: one role, one shared model without the colour one-hot
    assert meta["encoder"]["dropped"][group] == [6, 7]
    assert meta["rankings"]["queries"] == 4 and shaped["metrics"]["pooled"]["valid_oracle_agreement"] > 0.6
    check = meta["metrics"]["oracle_episodes"]  # lca.check_episodes (20) oracle episodes, in meta.json and info
    assert check == shaped["metrics"]["oracle_episodes"] and check["episodes"] == 20 and check["judged"] > 0
    run_main(tmp_path, "ippo", "two_switch", "shaper=lca", f"lca.potential={shaped['folder']}", "save_model=False",
             *TINY)
    assert "shaped_return_mean" in json.load(open(os.path.join(sacred_dir(tmp_path, "ippo", "two_switch"),
                                                                "info.json")))


def test_built_reused_or_given_artifacts_leave_the_seeded_run_alike(tmp_path):
    """Ranking pairs, training and checking the potential happen inside the run when lca.potential is not given, and
    draw random numbers; the run's own draws must not depend on whether the artifacts were built, reused or given."""
    def curves(folder):
        runs = glob.glob(os.path.join(folder, "sacred", "lca_ippo", "two_switch", "[0-9]*"))
        runs.sort(key=lambda run: int(os.path.basename(run)))
        info = json.load(open(os.path.join(runs[-1], "info.json")))
        return info, [info[k] for k in ("return_mean", "shaped_return_mean", "test_return_mean")]

    settings = ["labeler=oracle", "lca.n_pairs=200", "lca.check_episodes=2", *TINY]
    run_main(tmp_path / "run", "lca_ippo", "two_switch", *settings)
    built, built_curves = curves(tmp_path / "run")
    run_main(tmp_path / "run", "lca_ippo", "two_switch", *settings)
    reused, reused_curves = curves(tmp_path / "run")
    assert not built["lca"]["potential"]["reused"] and reused["lca"]["potential"]["reused"]
    run_main(tmp_path / "given", "lca_ippo", "two_switch", *settings,
             f"lca.potential={built['lca']['potential']['folder']}")
    assert built_curves == reused_curves == curves(tmp_path / "given")[1]


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("alg, runner, n", [("ippo", "episode", 1), ("mappo", "parallel", 2)])
def test_ippo_and_mappo_train_on_cuda_with_lca_shaped_per_agent_rewards(tmp_path, potential, alg, runner, n):
    run_main(tmp_path, alg, "two_switch", "shaper=lca", f"lca.potential={potential}", "use_cuda=True", *TINY,
             f"runner={runner}", f"batch_size_run={n}")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, alg, "two_switch"), "info.json")))
    assert info["device"]["device"] == "cuda"
    assert {"shaped_return_mean", "test_return_mean", "agent_0_return_mean"} <= set(info)
    assert all(th.isfinite(th.tensor([v["value"] if isinstance(v, dict) else v for v in info[k]], dtype=th.float)).all()
               for k in ("shaped_return_mean", "test_return_mean"))


@pytest.mark.parametrize("alg", ["ippo", "mappo"])
def test_a_constant_potential_trains_exactly_as_no_shaper(tmp_path, alg):
    """F_i = c - c = 0, so the weights after training equal shaper=none's bit for bit, with reward standardisation
    and value normalisation on: storing the reward as [n] per agent must not change the learning, nor loading the
    potential (its modules' random init) the agents' initial weights."""
    env_args = {**build_config(alg, "two_switch", {})["env_args"], "episode_limit": 20}
    env = make_env("two_switch", **env_args)
    constant = random_potential(str(tmp_path / "constant"), env.get_obs_size(), n_agents=2, groups=["agent"],
                                identity_dims=[6, 7], constant=3.0, env="two_switch", env_args=env_args)
    settings = [*TINY, "t_max=200", "save_model=True", "save_model_interval=1000", "standardise_rewards=True",
                "use_value_norm=True"]
    run_main(tmp_path / "none", alg, "two_switch", *settings)
    run_main(tmp_path / "lca", alg, "two_switch", "shaper=lca", f"lca.potential={constant}", "lca.coef=100.0",
             *settings)

    def weights(folder):
        model = max(glob.glob(os.path.join(folder, "models", "*", "[0-9]*")), key=lambda d: int(os.path.basename(d)))
        return {f: th.load(os.path.join(model, f), map_location="cpu") for f in ("agent.th", "critic.th")}

    none, lca = weights(tmp_path / "none"), weights(tmp_path / "lca")
    for f in none:
        assert none[f].keys() == lca[f].keys() and all(th.equal(none[f][k], lca[f][k]) for k in none[f]), f
    shaped = json.load(open(os.path.join(sacred_dir(tmp_path / "lca", alg, "two_switch"), "info.json")))
    assert "shaped_return_mean" in shaped and "shaped_return_mean" not in json.load(open(os.path.join(
        sacred_dir(tmp_path / "none", alg, "two_switch"), "info.json")))  # the shaper really ran
