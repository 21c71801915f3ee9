"""The one-command LCA pipeline (run/lca_pipeline.py, --config=lca_ippo / lca_mappo) through src/main.py on
Two-Switch with the oracle at tiny counts: a training run ranks pairs and trains potentials itself, a rerun (another
RL seed too) asks 0 labels and trains nothing, evaluation builds nothing, two concurrent starts build one artifact, and
the shaper gets the env's stay action and identity fields."""
import glob
import json
import os
import re
import sys

import h5py
import pytest
from tests.shapers.lca_helpers import random_potential

from envs import make_env
from helpers import config_args, make_ctx, run_main, run_main_concurrently
from run.lca_pipeline import shaper_env_info
from shapers.lca.rankings import rankings_hash
from utils.config import ConfigError, build_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "llm"))
from loopback_server import LoopbackServer, reply  # noqa: E402

ORACLE = ["lca.n_pairs=60", "env_args.episode_limit=20"]
TINY = ["t_max=200", "test_interval=100", "test_nepisode=2", "use_tensorboard=False", "log_interval=100",
        "runner_log_interval=100", "learner_log_interval=100", "hidden_dim=8", "save_model=False"]
EPISODE = ["runner=episode", "batch_size_run=1", "batch_size=2", "buffer_size=2"]
PARALLEL = ["runner=parallel", "batch_size_run=3", "batch_size=3", "buffer_size=3"]


def infos(results, name="lca_ippo"):
    """info.json of every run of `name` under `results`, oldest first."""
    runs = sorted(glob.glob(os.path.join(results, "sacred", name, "two_switch", "[0-9]*")),
                  key=lambda d: int(os.path.basename(d)))
    return [json.load(open(os.path.join(d, "info.json"))) for d in runs]


def artifacts(results):
    return (sorted(glob.glob(os.path.join(results, "rankings", "two_switch", "*", "rankings.h5"))),
            sorted(glob.glob(os.path.join(results, "potentials", "two_switch", "*", "meta.json"))))


@pytest.mark.parametrize("runner", [EPISODE, PARALLEL], ids=["episode", "parallel"])
def test_lca_ippo_ranks_and_trains_once_then_reuses(tmp_path, runner):
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *runner)
    (info,) = infos(tmp_path)
    lca = info["lca"]
    assert lca["built_by_run"] and not lca["rankings"]["reused"] and not lca["potential"]["reused"]
    assert lca["labeling"]["labeler"] == "oracle" and lca["labeling"]["labels_asked"] == 60
    assert lca["labeling"]["accuracy"]["items"] == 60 and lca["labeling"]["accuracy"]["accuracy"] == 1.0
    (rankings,), (meta_path,) = artifacts(tmp_path)
    meta = json.load(open(meta_path))
    assert lca["rankings"]["path"] == rankings and lca["rankings"]["sha256"] == rankings_hash(rankings)
    assert lca["potential"]["folder"] == os.path.dirname(meta_path)
    assert lca["potential"]["sha256"] == meta["potential_sha256"] and meta["rankings"]["sha256"] == rankings_hash(
        rankings)
    for key in ("shaped_return_mean", "return_mean", "test_return_mean", "agent_0_return_mean",
                "agent_1_return_mean", "test_agent_1_return_mean", "success_mean"):  # issue 16 section 1
        assert key in info, key
    # the same settings with another RL seed: the same artifacts, 0 labels asked, nothing trained
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *runner, "seed=4")
    again = infos(tmp_path)[-1]["lca"]
    assert again["rankings"]["reused"] and again["potential"]["reused"] and again["labeling"]["labels_asked"] == 0
    assert again["rankings"]["sha256"] == lca["rankings"]["sha256"]
    assert again["potential"]["sha256"] == lca["potential"]["sha256"]
    assert artifacts(tmp_path) == ([rankings], [meta_path])


def test_a_rerun_logs_that_it_asked_and_trained_nothing(tmp_path, capfd):
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE)
    assert "trained in" in capfd.readouterr().err
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE)
    err = capfd.readouterr().err
    assert "(reused, 0 labels asked)" in err and "(reused, nothing trained)" in err and "Labeling" not in err


def test_lca_mappo_runs_and_shares_the_artifacts_of_lca_ippo(tmp_path):
    run_main(tmp_path, "lca_mappo", "two_switch", *ORACLE, *TINY, *EPISODE)
    (info,) = infos(tmp_path, "lca_mappo")
    assert info["lca"]["built_by_run"] and not info["lca"]["potential"]["reused"]
    assert "shaped_return_mean" in info and "test_return_mean" in info
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE)
    assert infos(tmp_path)[-1]["lca"]["potential"] == {**info["lca"]["potential"], "reused": True,
                                                       "seconds": infos(tmp_path)[-1]["lca"]["potential"]["seconds"]}


def test_evaluation_labels_and_trains_nothing(tmp_path, capfd):
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, "save_model=True",
             "save_model_interval=100")
    trained = infos(tmp_path)[-1]["lca"]
    built = artifacts(tmp_path)
    checkpoint = glob.glob(os.path.join(tmp_path, "models", "*"))[0]
    capfd.readouterr()
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, "evaluate=True",
             f"checkpoint_path={checkpoint}")
    err = capfd.readouterr().err
    assert "Labeling" not in err and "LCA: rankings" not in err and "lca pairs" not in err
    evaluated = infos(tmp_path)[-1]["lca"]
    assert not evaluated["built_by_run"] and evaluated["potential"]["folder"] == trained["potential"]["folder"]
    assert "test_return_mean" in infos(tmp_path)[-1]
    # other ranking settings have no artifacts: evaluated all the same (test episodes are not shaped, so no
    # potential is needed); nothing labeled or trained, and the info says none was used
    capfd.readouterr()
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, "evaluate=True", "lca.pair_seed=1",
             f"checkpoint_path={checkpoint}")
    err = capfd.readouterr().err
    assert "Labeling" not in err and "lca pairs" not in err and "lca potentials" not in err
    last = infos(tmp_path)[-1]
    assert "potential" not in last["lca"] and "not shaped" in last["lca"]["evaluation"]
    assert "test_return_mean" in last
    assert artifacts(tmp_path) == built


def test_given_rankings_are_trained_not_labeled_and_a_resume_reuses_everything(tmp_path, capfd):
    rankings = str(tmp_path / "given" / "rankings.h5")
    run_main(tmp_path, "lca_label", "two_switch", *ORACLE, f"label_out={rankings}")
    capfd.readouterr()
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, f"lca.rankings={rankings}",
             "save_model=True", "save_model_interval=100")
    err = capfd.readouterr().err
    assert "Labeling" not in err  # and the file was ranked with these settings: nothing to warn about
    assert "settings of ranking" not in err
    lca = infos(tmp_path)[-1]["lca"]
    assert lca["rankings"] == {"path": rankings, "given": True, "sha256": rankings_hash(rankings)}
    assert lca["labeling"]["labeler"] == "oracle" and lca["labeling"]["labels_asked"] == 0
    assert not lca["potential"]["reused"]
    checkpoint = glob.glob(os.path.join(tmp_path, "models", "*"))[0]
    capfd.readouterr()
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, f"lca.rankings={rankings}",
             f"checkpoint_path={checkpoint}", "t_max=300", "lca.n_pairs=80")  # the same potential: resume passes
    assert infos(tmp_path)[-1]["lca"]["potential"]["reused"]
    # a ranking setting other than the file's ranks nothing here: the run says so, with the file's value
    assert "lca.rankings is given, so lca.n_pairs=80 (the file: 60) (settings of ranking) are not used" in \
        capfd.readouterr().err


def test_given_rankings_name_the_labeler_settings_they_differ_in_and_record_their_own_labeling(tmp_path, capfd):
    """Rankings made by the oracle given to a run that says noisy_oracle at 0.7: the warning names each labeler
    setting with the file's value, and info.json's lca.labeling is the file's (as a run that built them records)."""
    rankings = str(tmp_path / "given" / "rankings.h5")
    run_main(tmp_path / "given", "lca_label", "two_switch", *ORACLE, f"label_out={rankings}")
    capfd.readouterr()
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, f"lca.rankings={rankings}",
             "labeler=noisy_oracle", "oracle_accuracy=0.7", "noise_seed=5", "lca.check_episodes=0")
    err = capfd.readouterr().err
    for named in ("labeler='noisy_oracle' (the file: 'oracle')", "oracle_accuracy=0.7 (the file: not set)",
                  "noise_seed=5 (the file: not set)"):
        assert named in err, err[-2000:]
    labeling = infos(tmp_path)[-1]["lca"]["labeling"]
    assert labeling["labeler"] == "oracle" and labeling["given"] and labeling["labels_asked"] == 0
    assert labeling["accuracy"]["items"] == 60 and labeling["accuracy"]["accuracy"] == 1.0
    assert labeling["settings"]["labeler"] == "oracle" and "oracle_accuracy" not in labeling["settings"]


def test_llm_labeling_cost_is_recorded_and_kept_on_reuse(tmp_path):
    """labeler=llm over the loopback server: info.json's lca.labeling holds the requests, tokens and cost; a rerun
    asks nothing and records the stored labeling's cost (what the rankings cost to make)."""
    llm = ["labeler=llm", "llm.backend=openai", "llm.model=loop", f"llm.cache_dir={tmp_path / 'cache'}",
           "llm.price_in_per_m=1.0", "llm.price_out_per_m=2.0", "lca.n_pairs=6", "lca.answer_mode=direct"]
    with LoopbackServer(responder=lambda body: reply(*["[1]"] * int(body.get("n") or 1),
                                                     usage={"prompt_tokens": 100, "completion_tokens": 2})) as srv:
        run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, *llm, f"llm.base_url={srv.base_url}")
        run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, *llm, f"llm.base_url={srv.base_url}")
        asked = srv.count
    first, second = (info["lca"]["labeling"] for info in infos(tmp_path))
    assert asked == 6 and first["requests"] == 6 and first["labels_asked"] == 6 and first["backend"] == "openai"
    assert first["prompt_tokens"] == 600 and first["completion_tokens"] == 12 and first["estimated_requests"] == 0
    assert first["cost_usd"] == pytest.approx((600 * 1.0 + 12 * 2.0) / 1e6)
    assert second["labels_asked"] == 0 and second["cost_usd"] == first["cost_usd"]
    assert first["accuracy"]["helps_rate"] == 1.0


def test_incomplete_rankings_stop_the_run_before_training(tmp_path, capfd):
    """An llm labeling that stops early (here a replay cache miss) keeps its answers and fails the run: no potential
    is trained on a part of the rankings."""
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, "labeler=llm", "llm.backend=replay",
             f"llm.cache_dir={tmp_path / 'cache'}", "lca.n_pairs=4", expect=2)  # a config error: one line
    err = capfd.readouterr().err
    assert "are incomplete" in err and "Traceback" not in err
    rankings, metas = artifacts(tmp_path)
    assert len(rankings) == 1 and metas == []


def test_incomplete_given_rankings_are_refused_wherever_they_are_read(tmp_path, capfd):
    """A rankings file whose labeling stopped early (5 of 60 items answered) is refused by lca_potential and by
    lca_ippo with lca.rankings, naming the count and the fix; lca.allow_incomplete=True trains on it, and a
    potential so trained is refused as lca.potential without the opt-in."""
    rankings = str(tmp_path / "given" / "rankings.h5")
    run_main(tmp_path / "given", "lca_label", "two_switch", *ORACLE, f"label_out={rankings}")
    with h5py.File(rankings, "r+") as f:
        f["answers"][5:] = float("nan")
        f.attrs["complete"] = json.dumps(False)
    refused = r"are incomplete: 5 of 60 items answered .* lca.allow_incomplete=True to train on the 5 answered items"
    lca_fails(tmp_path, "lca_potential", capfd, "env_args.episode_limit=20", f"lca.rankings={rankings}",
              match=refused)
    lca_fails(tmp_path, "lca_ippo", capfd, *ORACLE, *TINY, *EPISODE, f"lca.rankings={rankings}", match=refused)
    run_main(tmp_path, "lca_potential", "two_switch", "env_args.episode_limit=20", f"lca.rankings={rankings}",
             "lca.allow_incomplete=True", "lca.check_episodes=0", "lca.epochs=3")
    (meta,) = artifacts(tmp_path)[1]
    assert json.load(open(meta))["rankings"]["complete"] is False
    capfd.readouterr()
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, f"lca.potential={os.path.dirname(meta)}",
             expect=2)
    assert "was trained on incomplete rankings" in capfd.readouterr().err
    # a potential trained before potentials recorded `complete`: its rankings file, unchanged, tells
    recorded = json.load(open(meta))
    del recorded["rankings"]["complete"]
    json.dump(recorded, open(meta, "w"))
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, f"lca.potential={os.path.dirname(meta)}",
             expect=2)
    assert "was trained on incomplete rankings" in capfd.readouterr().err


def test_two_concurrent_starts_build_one_artifact(tmp_path):
    results = str(tmp_path / "results")
    run_main_concurrently([(tmp_path / f"run{k}", "lca_ippo", "two_switch", "lca.n_pairs=600",
                            "env_args.episode_limit=20", *TINY, *EPISODE, f"local_results_path={results}",
                            f"seed={3 + k}")  # two trials of a sweep: RL seeds differ, the ranking settings do not
                           for k in (0, 1)])
    rankings, metas = artifacts(results)
    assert len(rankings) == 1 and len(metas) == 1
    built = [info["lca"] for info in infos(results)]
    assert len(built) == 2 and {b["potential"]["sha256"] for b in built} == {
        json.load(open(metas[0]))["potential_sha256"]}
    assert sorted(b["potential"]["reused"] for b in built) == [False, True]  # one trained, the other waited
    assert sorted(b["rankings"]["reused"] for b in built) == [False, True]


def test_the_shaper_gets_the_stay_action_and_identity_fields(tmp_path):
    args = config_args("ippo", "two_switch", env_args={"episode_limit": 20})
    info = shaper_env_info(args, {"n_agents": 2})
    assert info["stay_action"] == 0 and info["identity_dims"] == [6, 7] and info["n_agents"] == 2
    # a potential whose identity fields are elsewhere is refused, naming them
    env_args = {**build_config("ippo", "two_switch", {})["env_args"], "episode_limit": 20}
    obs_size = make_env("two_switch", **env_args).get_obs_size()
    folder = random_potential(str(tmp_path / "potential"), obs_size, n_agents=2, groups=["agent"],
                              identity_dims=[4, 5], seed=0, env="two_switch", env_args=env_args)
    with pytest.raises(ValueError, match=r"identity fields at \[4, 5\].*at \[6, 7\]"):
        make_ctx("lca_ippo", "two_switch", lca={"potential": folder}, env_args={"episode_limit": 20}, hidden_dim=8,
                 runner="episode", batch_size_run=1)


@pytest.mark.parametrize("alg", ["qmix", "vdn"])
def test_lca_with_a_q_learner_is_refused_naming_shaper_and_common_reward(alg):
    with pytest.raises(ConfigError, match=rf"{alg} \(learner: q_learner\) trains on one team reward: shaper=lca .*"
                                          rf"common_reward=True and shaper=none"):
        make_ctx(alg, "two_switch", shaper="lca", lca={"potential": "unused: refused before it is read"})


# ----- mistakes refused before anything runs, and what is warned about (the tester's report on LCA) -----
def lca_fails(tmp_path, alg, capfd, *updates, match):
    """src/main.py exits 2 with one 'config error' line matching `match` (no traceback), having ranked and trained
    nothing and left no run folder."""
    capfd.readouterr()
    run_main(tmp_path, alg, "two_switch", *updates, expect=2)
    err = capfd.readouterr().err
    assert "Traceback" not in err and re.search(match, err), err[-2000:]
    assert artifacts(tmp_path) == ([], []) and not glob.glob(os.path.join(tmp_path, "sacred", alg, "*", "[0-9]*"))
    return err


def test_lca_mistakes_are_one_line_errors_before_any_ranking_or_training(tmp_path, capfd):
    given = tmp_path / "given"
    rankings = str(given / "rankings.h5")
    run_main(given, "lca_label", "two_switch", *ORACLE, f"label_out={rankings}")
    other_env = str(given / "other_env.h5")
    with open(rankings, "rb") as f, open(other_env, "wb") as g:
        g.write(f.read())
    with h5py.File(other_env, "r+") as f:
        f.attrs["env"] = json.dumps("victim_rubble")
    not_rankings = given / "notes.h5"
    not_rankings.write_text("not HDF5")
    env_args = {**build_config("ippo", "victim_rubble", {})["env_args"]}
    obs_size = make_env("victim_rubble", **env_args).get_obs_size()
    vr_potential = random_potential(str(tmp_path / "vr_potential"), obs_size, n_agents=2, groups=["agent"],
                                    seed=0, env="victim_rubble", env_args=env_args)
    run = [*ORACLE, *TINY, *EPISODE]
    for updates, match in (
            (["lca.mode=multiply"], r"'lca.mode' must be one of add, replace; got 'multiply'"),
            (["lca.terminal_potential=none"], r"'lca.terminal_potential' must be one of keep, zero"),
            (["lca.pair_seed=-1"], r"'lca.pair_seed' must be an integer in \[0, 2\*\*32\)"),
            (["lca.coef=-1"], r"'lca.coef' must be >= 0"),
            (["lca.n_pairs=0"], r"'lca.n_pairs' must be an integer >= 1"),
            (["lca.rankings=/nonexistent/rankings.h5"], r"lca.rankings=/nonexistent/rankings.h5 does not exist"),
            ([f"lca.rankings={other_env}"], r"are of env victim_rubble .* this run has env two_switch"),
            (["lca.potential=/nonexistent/potential"], r"lca.potential=/nonexistent/potential is not a folder"),
            ([f"lca.potential={vr_potential}"], r"does not fit this run: env: trained on victim_rubble")):
        lca_fails(tmp_path, "lca_ippo", capfd, *run, *updates, match=match)
    for updates, match in (
            ([], r"run=shape needs a rankings file"),
            (["lca.rankings=/nonexistent/rankings.h5"], r"does not exist"),
            ([f"lca.rankings={not_rankings}"], r"is not a rankings file"),
            ([f"lca.rankings={other_env}"], r"are of env victim_rubble"),
            (["lca.groups=some"], r"'lca.groups' must be one of auto, shared, per_agent"),
            (["lca.valid_fraction=1"], r"'lca.valid_fraction' must be in \[0, 1\)"),
            (["lca.lr=0"], r"'lca.lr' must be > 0"), (["lca.epochs=0"], r"'lca.epochs' must be an integer >= 1"),
            (["lca.batch_size=0"], r"'lca.batch_size'"), (["lca.hidden_dim=0"], r"'lca.hidden_dim'"),
            (["lca.patience=0"], r"'lca.patience'"), (["lca.normalise=std"], r"'lca.normalise' must be one of"),
            (["lca.score_l2=-1"], r"'lca.score_l2' must be >= 0"),
            (["lca.check_episodes=-1"], r"'lca.check_episodes' must be an integer >= 0")):
        rank = [] if updates and updates[0].startswith("lca.rankings") or not updates else [f"lca.rankings={rankings}"]
        lca_fails(tmp_path, "lca_potential", capfd, "env_args.episode_limit=20", *rank, *updates, match=match)


def test_rankings_given_beside_a_potential_are_named_as_unused(tmp_path, capfd):
    env_args = {**build_config("ippo", "two_switch", {})["env_args"], "episode_limit": 20}
    obs_size = make_env("two_switch", **env_args).get_obs_size()
    folder = random_potential(str(tmp_path / "potential"), obs_size, n_agents=2, groups=["agent"],
                              identity_dims=[6, 7], seed=0, env="two_switch", env_args=env_args)
    rankings = str(tmp_path / "given" / "rankings.h5")
    run_main(tmp_path / "given", "lca_label", "two_switch", *ORACLE, f"label_out={rankings}")
    capfd.readouterr()
    run_main(tmp_path, "lca_ippo", "two_switch", *ORACLE, *TINY, *EPISODE, f"lca.potential={folder}",
             f"lca.rankings={rankings}")
    assert f"lca.rankings={rankings} is not used: lca.potential={folder} is given" in capfd.readouterr().err
