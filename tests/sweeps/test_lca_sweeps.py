"""The LCA study's sweep files (config/sweeps/lca_*.yaml) build and check every trial (as src/sweep.py --check does)
at the paper's settings, and bench/learning_curves.py --suite lca (bench/lca_suite.py) selects their rows, marks the
rest 'not run', and runs a tiny study end to end."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from sweeps.spec import expand, load_sweep, trial_config, validate
from utils.config import load_alg
from utils.paths import REPO_ROOT

BUDGET = {"two_switch": 250000, "victim_rubble": 210000, "pistonball": 18000}


def load_bench(name):
    sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "bench", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(os.path.join(REPO_ROOT, "bench"))


@pytest.mark.parametrize("name", ["lca_two_switch", "lca_victim_rubble", "lca_pistonball", "lca_llm_local",
                                  "lca_openai"])
def test_sweep_files_check_at_the_papers_settings(name):
    trials = validate(expand(load_sweep(name)))
    entries = load_sweep(name)["entries"]
    assert len(trials) == 3 * len(entries) and {t["seed"] for t in trials} == {1, 2, 3}
    for t in trials:
        o = t["overrides"]
        assert t["t_max"] == BUDGET[t["env"]] and o["test_interval"] == BUDGET[t["env"]] // 20
        assert o["reward_scalarisation"] == "mean"
        if t["env"] == "pistonball":
            assert o["env_args.reward"] == "sparse"
        else:
            assert o["env_args.success_reward"] == 2.0 and o["env_args.step_penalty"] == "at_end"
        if t["alg"] == "lca_ippo":
            assert o["labeler"] in ("oracle", "noisy_oracle", "llm")
    rows = {(e["env"], e["name"]) for e in entries}
    if name.startswith("lca_") and name[4:] in BUDGET:
        env = name[4:]
        expected = {"mappo", "ippo", "qmix", "vdn", "lca_oracle", "lca_noisy70_k1", "lca_noisy70_k4",
                    "lca_noisy80_k1", "lca_noisy80_k4"} | ({"mappo_individual"} if env != "pistonball" else set())
        assert rows == {(env, r) for r in expected}
        individual = [t for t in trials if t["entry_name"] == "mappo_individual"]
        assert all(t["overrides"]["env_args.individual_reward"] is True and t["overrides"]["common_reward"] is False
                   for t in individual)


@pytest.mark.parametrize("name", ["lca_two_switch", "lca_victim_rubble", "lca_pistonball"])
def test_the_studys_ppo_rows_differ_only_in_the_reward(name):
    """LCA's rows and the team-reward IPPO/MAPPO baselines train with the same PPO settings (lca_ippo's: 15 epochs,
    not ippo.yaml's 4), so a gap between them is the reward's, not the optimiser's."""
    keys = set(load_alg("ippo")) - {"name", "critic_type", "obs_individual_obs"}  # IPPO vs MAPPO: the critic
    lca = {k: load_alg("lca_ippo")[k] for k in keys}
    assert lca["epochs"] == 15 and load_alg("lca_mappo")["epochs"] == 15
    assert load_alg("ippo")["epochs"] == 4  # ippo.yaml keeps epymarl's value
    configs = [(t, trial_config(t)) for t in expand(load_sweep(name)) if t["seed"] == 1]
    ppo = [(t, c) for t, c in configs if c["learner"] == "ppo_learner"]
    assert len(ppo) == (7 if name == "lca_pistonball" else 8)
    for t, config in ppo:
        assert {k: config[k] for k in keys} == lca, t["entry_name"]


def test_suite_selects_rows_and_marks_the_rest_not_run(tmp_path):
    suite = load_bench("lca_suite")
    default = suite.studies(suite.ENVS, suite.BASELINES, suite.DEFAULT_RANKERS)
    assert [name for name, _ in default] == ["lca_two_switch", "lca_victim_rubble", "lca_pistonball"]
    assert all(diff == {} for _, diff in default)  # the defaults are the sweep files themselves
    spec = suite.study_spec(suite.ENVS, suite.BASELINES, suite.DEFAULT_RANKERS)
    why = {(r["env"], r["row"]): r.get("not_run") for r in spec["rows"]}
    assert why[("two_switch", "lca_llm_k1")].startswith("slow local LLM")
    assert "no OpenAI-compatible server" in why[("pistonball", "lca_openai_k1")]
    assert why[("victim_rubble", "lca_noisy70_k4")] is None and ("pistonball", "mappo_individual") not in why
    assert spec["threshold"] == {"two_switch": 0.9, "victim_rubble": 0.9, "pistonball": 0.8}

    picked = suite.studies(["pistonball"], ["mappo"], ["noisy80_k4", "llm_k2", "openai_k1"], seeds=[1],
                           with_=suite.t_max_changes(2000), openai_url="http://127.0.0.1:9/v1", openai_model="m")
    by_file = dict(picked)
    assert list(by_file) == ["lca_pistonball", "lca_llm_local", "lca_openai"]
    assert [e["name"] for e in by_file["lca_pistonball"]["entries"]] == ["mappo", "lca_noisy80_k4"]
    llm = by_file["lca_llm_local"]["entries"]
    assert [(e["env"], e["name"]) for e in llm] == [("pistonball", "lca_llm_k2")]
    assert llm[0]["with"]["t_max"] == 2000 and llm[0]["with"]["test_interval"] == 100  # --t-max reaches entries
    assert by_file["lca_openai"]["with"]["llm.model"] == "m"
    study = load_bench("study")
    for name, diff in picked:  # the derived sweep files check
        path, _ = study.derive(name, diff, str(tmp_path / "results"), str(tmp_path))
        trials = validate(expand(load_sweep(path)))
        assert {t["t_max"] for t in trials} == {2000} and {t["seed"] for t in trials} == {1}


def test_unknown_ranker_is_refused_by_name(capsys):
    lc = load_bench("learning_curves")
    with pytest.raises(SystemExit) as e:
        lc.main(["--suite", "lca", "--rankers", "oracle", "gpt5"])
    assert e.value.code == 2 and "--rankers: unknown gpt5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lc.main(["--suite", "qllm", "--rankers", "oracle"])
    assert "belong to --suite lca" in capsys.readouterr().err


@pytest.mark.long
def test_tiny_study_end_to_end(tmp_path):
    """One env, one seed, t_max 1000: the oracle LCA row (ranks pairs and trains its potential itself) and MAPPO
    through Ray, then the table with every other row 'not run' (about 45 s, mostly Ray's start)."""
    out, results = tmp_path / "out", tmp_path / "results"
    cmd = [sys.executable, os.path.join(REPO_ROOT, "bench", "learning_curves.py"), "--suite", "lca", "--envs",
           "two_switch", "--seeds", "1", "--t-max", "1000", "--rankers", "oracle", "--baselines", "mappo",
           "--results", str(results), "--out", str(out), "--jobs", "2", "--num-cpus", "2"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {r["row"]: r for r in json.load(open(out / "lca.json"))["study"]}
    assert rows["mappo"]["status"] == "ok" and rows["lca_oracle"]["status"] == "ok"
    assert rows["lca_oracle"]["label_accuracy"] == 1.0  # from the run's info.json lca
    assert rows["qmix"]["status"] == "not run: not asked for (--baselines)"
    assert rows["lca_llm_k1"]["status"].startswith("not run: slow local LLM")
    assert "| two_switch | lca_oracle | 1 |" in open(out / "lca.md").read()
    assert (out / "lca" / "fig3_panels.png").exists() and (out / "lca_study_spec.json").exists()
