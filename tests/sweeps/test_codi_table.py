"""bench/codi_table.py: its sweeps derive from the shipped config/sweeps/codi_*.yaml and check on every env (no Ray,
nothing run); the table, scores, labels and generation reports assembled from synthetic sweep folders and Sacred runs
with known numbers; the paper's Table 1 read from its text; the coverage of MPE spread observations."""
import importlib.util
import json
import os
from datetime import datetime, timezone

import numpy as np
import pytest

from offline import DatasetWriter
from sweeps.spec import expand, load_sweep, validate
from utils.paths import REPO_ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("codi_table", os.path.join(REPO_ROOT, "bench", "codi_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trials_of(bench, base, diff, tmp_path):
    return bench.check_sweep(base, diff, str(tmp_path / "results"))


def test_the_shipped_files_are_the_plan_of_spread_n3(tmp_path):
    bench = load_bench()
    a = bench.parse_args(["--envs", "mpe_spread", "--n-agents", "3", "--out", str(tmp_path)])
    plan = bench.Plan(a)
    cell = plan.cells[0]
    assert (cell.tag, cell.label, cell.env_args) == ("spread3", "spread_N3", {})  # N=3 is the env config's own
    assert plan.label() == {} and plan.augment() == {} and plan.learn(cell, "original") == {}
    assert plan.no_comp(cell, "/art/codi") == {"entries": [{
        "alg": "codi_no_comp", "env": "mpe_spread", "name": "codi_no_comp_spread3", "seeds": [1],
        "with": {"offline_dataset": "results/datasets/spread_N3/imbalanced_1e_codi_noisy80.h5", "augment_preset": "cpu",
                 "diffusion_dim": 64, "augment_train_steps": 10000, "augment_label_name": "noisy80",
                 "augment_checkpoint": "/art/codi"}}]}
    assert bench.sweep_name("codi_learn", {}) == "codi_learn"
    for base in ("codi_label", "codi_augment", "codi_no_comp", "codi_learn"):  # each runs alone, as shipped
        assert validate(expand(load_sweep(base)))
    learn = plan.learn(cell, "codi", "/gen/codi.h5")
    assert [e["with"]["offline_dataset"] for e in learn["entries"]] == [
        ["results/datasets/spread_N3/imbalanced_1e.h5", "/gen/codi.h5"]] * 4
    assert [e["name"] for e in learn["entries"]] == ["codi__bc", "codi__bc50", "codi__omar", "codi__omiga"]


def test_check_builds_every_sweep_of_every_env_and_runs_nothing(tmp_path, capsys):
    bench = load_bench()
    args = ["--envs", "mpe_spread", "lbf_8x8_2p_2f_coop", "mpe_world", "--n-agents", "3", "4", "--seeds", "1", "2",
            "3", "--privileged", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")]
    assert bench.main(["--check", *args]) == 0
    out = capsys.readouterr().out
    # cells spread3, spread4, lbf2 (fixed N), world3 (fixed N); augment: codi, madiff_like, codi_privileged per cell;
    # learn: 5 datasets x 4 learners x 3 seeds per cell
    assert ("260 trials (label 4, augment 12, no_comp 4, learn 240; 196 wait for inputs; 260 left to run) + 4 dataset "
            "recipe(s)") in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "out").exists()
    plan = bench.Plan(bench.parse_args(args))
    assert [(c.tag, c.n, c.label) for c in plan.cells] == [
        ("spread3", 3, "spread_N3"), ("spread4", 4, "spread_N4"), ("lbf2", 2, "Foraging-8x8-2p-2f-coop-v3"),
        ("world3", 3, "world")]
    _, trials = trials_of(bench, "codi_augment", plan.augment(), tmp_path)
    by_id = {t["id"]: t for t in trials}
    assert by_id["codi_spread4-s1"]["env_label"] == "spread_N4"  # env_args.N reaches the run config
    assert by_id["codi_spread4-s1"]["overrides"]["env_args.N"] == 4
    assert "env_args.N" not in by_id["codi_spread3-s1"]["overrides"]
    assert by_id["codi_spread4-s1"]["overrides"]["augment_label_name"] == "noisy80"
    assert "augment_label_name" not in by_id["madiff_like_lbf2-s1"]["overrides"]
    assert by_id["codi_privileged_world3-s1"]["run"] == "augment"
    _, label = trials_of(bench, "codi_label", plan.label(), tmp_path)
    spread4 = [t for t in label if t["id"] == "label_spread4-s1"][0]["overrides"]
    assert spread4["label_out"].endswith("spread_N4/imbalanced_1e_codi_noisy80.h5")
    assert (spread4["labeler"], spread4["oracle_accuracy"]) == ("noisy_oracle", 0.8)


def test_scaling_learners_train_on_the_other_n_only(tmp_path):
    bench = load_bench()
    plan = bench.Plan(bench.parse_args(["--envs", "mpe_spread", "lbf_8x8_2p_2f_coop", "--n-agents", "3", "5",
                                        "--scaling-learners", "bc", "bc50", "--out", str(tmp_path)]))
    algs = {c.tag: [e["alg"] for e in plan.learn(c, "codi", "/g.h5")["entries"]] for c in plan.cells}
    assert algs == {"spread3": ["bc", "bc50", "omar", "omiga"], "spread5": ["bc", "bc50"],
                    "lbf2": ["bc", "bc50", "omar", "omiga"]}
    gpu = bench.Plan(bench.parse_args(["--augment-gpus", "1", "--preset", "paper", "--out", str(tmp_path)]))
    _, trials = trials_of(bench, "codi_augment", gpu.augment(), tmp_path)
    assert {(t["resources"]["gpu"], t["overrides"]["augment_preset"]) for t in trials} == {(1.0, "paper")}


def test_llm_labels_pass_through_and_quick_is_small(tmp_path):
    bench = load_bench()
    a = bench.parse_args(["--labeler", "llm", "--label-with", "llm.backend=local", "label_segments=200", "--quick",
                          "--out", str(tmp_path)])
    plan = bench.Plan(a)
    entry = plan.label()["entries"][0]
    assert entry["with"]["labeler"] == "llm" and entry["with"]["llm.backend"] == "local"
    # other label settings are other labels: the tag (label name, study copy) carries a hash of --label-with
    assert entry["with"]["label_name"].startswith("llm-") and entry["with"]["label_name"] != "llm"
    assert entry["with"]["label_out"].endswith(f"imbalanced_1e_codi_{entry['with']['label_name']}.h5")
    assert "oracle_accuracy" not in entry["with"]
    shuffled = bench.parse_args(["--labeler", "llm", "--label-with", "llm.backend=local", "label_segments=200",
                                 "label_shuffle_agents=True", "--quick", "--out", str(tmp_path)])
    assert shuffled.labeler_tag not in (a.labeler_tag, "llm")
    assert bench.parse_args(["--labeler", "llm", "--quick", "--out", str(tmp_path)]).labeler_tag == "llm"
    with pytest.raises(SystemExit):  # the oracle or the LLM would ignore it
        bench.parse_args(["--labeler", "oracle", "--oracle-accuracy", "0.6", "--out", str(tmp_path)])
    assert [c.tag for c in plan.cells] == ["spread3"] and a.seeds == [1]
    _, trials = trials_of(bench, "codi_learn", plan.learn(plan.cells[0], "original"), tmp_path)
    assert len(trials) == 4 and {t["t_max"] for t in trials} == {600}


# ------------------------------------------------------------------------------ synthetic runs with known numbers
REFS = {"imbalanced_1e": -100.0, "expert_2": -80.0, "expert_all": -60.0}
# mean final test return per (dataset, learner); seeds 1 and 2 score mean - 5 and mean + 5
MEANS = {("original", "bc"): -90.0, ("original", "bc50"): -85.0, ("madiff_like", "bc"): -88.0,
         ("madiff_like", "bc50"): -84.0, ("codi_no_comp", "bc"): -80.0, ("codi_no_comp", "bc50"): -76.0,
         ("codi", "bc"): -70.0, ("codi", "bc50"): -66.0}


def write_run(root, name, label, run_id, config, info):
    d = os.path.join(root, "sacred", name, label, str(run_id))
    os.makedirs(d)
    beat = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
    for file, data in (("config.json", {"name": name, **config}), ("run.json", {"status": "COMPLETED",
                                                                              "heartbeat": beat}),
                       ("info.json", info)):
        with open(os.path.join(d, file), "w") as f:
            json.dump(data, f)
    return d


def write_sweep(folder, trials):
    os.makedirs(folder)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"name": os.path.basename(folder), "trials": [
            {"id": i, "status": "COMPLETED", "sacred_run": run} for i, run in trials]}, f)


def generate_info(path, artifacts, pass_rate):
    """An augment run's info; the codi rows (pass rate 0.5) count returns outside the source's, as generation does
    now (the others as runs made before the count)."""
    outside = ({"source_return_range": [-90.0, -60.0]} if pass_rate == 0.5 else {})
    counts = {"return_above_source": 2, "return_below_source": 0} if outside else {}
    return {"augment": {"artifacts": artifacts, "labeler": {"report": {"vs_given": {"accuracy": 0.81},
                                                                       "vs_truth": {"accuracy": 0.95}}},
                        "generate": {"path": path, "pass_rate": pass_rate, "real_pass_rate": 0.9, "delta": 0.03,
                                     "target_rtg": -70.0, "return_mean": -75.0, "return_std": 3.0, "length_mean": 25.0,
                                     "counters": {"episodes": 10, "resamples": 4, "dropped": 1, **counts},
                                     **outside}}}


def test_the_table_is_assembled_from_the_runs(tmp_path):
    bench = load_bench()
    res, out = tmp_path / "results", tmp_path / "out"
    args = ["--envs", "mpe_spread", "--n-agents", "3", "--seeds", "1", "2", "--learners", "bc", "bc50", "--results",
            str(res), "--out", str(out), "--no-collect"]
    a = bench.parse_args(args)
    plan = bench.Plan(a)
    c = plan.cells[0]
    os.makedirs(c.data_dir)
    with open(os.path.join(c.data_dir, "returns.json"), "w") as f:
        json.dump({"datasets": [{"dataset": k, "episodes": 10, "return_mean": v, "return_std": 1.0,
                                 "composition": k} for k, v in REFS.items()]}, f)
    root, run_id = str(res), iter(range(1, 100))
    label_run = write_run(root, "label_agent_quality", c.label, next(run_id), {"run": "label"}, {"labeling": {
        "labeler": "noisy_oracle", "label_name": "noisy80", "dataset": os.path.join(c.data_dir, "imbalanced_1e.h5"),
        "settings": {"label_protocol_hint": False, "oracle_accuracy": 0.8},
        "accuracy": {"items": 50, "labeled": 50, "accuracy": 0.78, "confusion": [[1]]}}})
    write_sweep(bench.sweep_folder(a, "codi_label", plan.label()), [(f"label_{c.tag}-s1", label_run)])
    art = str(tmp_path / "augment" / "codi" / "abc")
    gen = {"codi": os.path.join(art, "generated_1.h5"), "codi_no_comp": os.path.join(art, "generated_2.h5"),
           "madiff_like": str(tmp_path / "augment" / "madiff_like" / "def" / "generated_3.h5")}
    runs = {aug: write_run(root, aug, c.label, next(run_id), {"run": "augment"},
                           generate_info(gen[aug], os.path.dirname(gen[aug]), rate))
            for aug, rate in (("codi", 0.5), ("madiff_like", 0.7), ("codi_no_comp", 0.6))}
    write_sweep(bench.sweep_folder(a, "codi_augment", plan.augment()),
                [(f"{aug}_{c.tag}-s1", runs[aug]) for aug in ("codi", "madiff_like")])
    write_sweep(bench.sweep_folder(a, "codi_no_comp", plan.no_comp(c, art)),
                [(f"codi_no_comp_{c.tag}-s1", runs["codi_no_comp"])])
    for k, ds in enumerate(plan.datasets):
        trials = {}
        for alg in ("bc", "bc50"):
            for seed, delta in ((1, -5.0), (2, 5.0)):
                name = f"{ds}__{alg}"
                final = MEANS[(ds, alg)] + delta
                config = {"run": "offline", "env": "mpe", "seed": seed, "env_args": {"scenario": "spread", "N": 3},
                          "offline_steps": 20}
                run = write_run(root, name, c.label, next(run_id), config, {
                    "test_return_mean": [-100.0, final], "test_return_mean_T": [0, 20]})
                trials.setdefault(alg, []).append((f"{name}-s{seed}", run))
        if k % 2:  # as two commands with one learner each made them: the report pools both sweeps
            for alg, runs in trials.items():
                write_sweep(bench.sweep_folder(a, "codi_learn", plan.learn(c, ds, gen.get(ds), [alg])), runs)
        else:
            write_sweep(bench.sweep_folder(a, "codi_learn", plan.learn(c, ds, gen.get(ds))), sum(trials.values(), []))

    assert bench.main(["--report-only", *args]) == 0
    table = json.loads((out / "table.json").read_text())
    cell = table["cells"]["spread3"]
    assert cell["references"] == REFS and cell["generated"] == gen
    for (ds, alg), mean in MEANS.items():
        s = cell["scores"][bench.LEARNERS[alg]][ds]
        assert s["n"] == 2 and s["mean"] == mean and s["std"] == 5.0, (ds, alg, s)
        assert s["normalised_mean"] == pytest.approx((mean + 100.0) / 40.0)
        assert s["normalised_std"] == pytest.approx(5.0 / 40.0)
    expected = {ds: np.mean([(MEANS[(ds, alg)] + 100.0) / 40.0 for alg in ("bc", "bc50")]) for ds in plan.datasets}
    for ds, avg in table["averages"].items():
        assert avg["rows"] == 2 and avg["mean"] == pytest.approx(expected[ds])
    assert table["scaling"]["BC"]["codi"] == [[3, pytest.approx(0.5)]]  # (-70 + 100)/40 - (-90 + 100)/40
    md = (out / "table.md").read_text()
    assert "| mpe_spread (N = 3) | BC | -90.000 ± 5.000 [0.25 ± 0.12] |" in md
    assert "CN: 0.21 / 0.33 / 0.36 / 0.58 |" in md  # the paper's BC row beside ours
    assert "noisy_oracle at accuracy 0.8" in md
    assert "| **average** (normalised) | all | 0.31 (2 rows) | 0.35 (2 rows) | 0.55 (2 rows) | 0.80 (2 rows) |" in md
    assert os.path.isfile(out / "scaling.png") and os.path.isfile(out / "spread3" / "curves.png")
    labels = (out / "labels.md").read_text()
    assert "| mpe_spread (3) | noisy_oracle | False | 50 | 50 | 0.780 | 0.810 | 0.950 |" in labels
    every_run = "| mpe_spread (3) | noisy80 | noisy_oracle | – | 0.800 | False | False | 50 | 50 | 0.780 | – |"
    assert every_run in labels
    generation = (out / "generation.md").read_text()
    assert ("| mpe_spread (3) | codi | 10 | 0.03 | 0.500 | 0.900 | 4 | 1 | off | -75 ± 3 | -70 | 2 / 0 of [-90, -60] | "
            "25.0 |") in generation
    assert "| mpe_spread (3) | madiff_like | 10 | 0.03 | 0.700 |" in generation
    assert "| -75 ± 3 | -70 | – | 25.0 |" in generation  # a run made before the count


def test_the_papers_table_1_is_read_from_its_text():
    bench = load_bench()
    paper = bench.paper_table()
    if paper is None:
        pytest.skip("the paper's text (../shared/papers/000_*.txt) is not here")
    cn = paper["rows"]["CN"]
    # the issue's anchors for CN: BC / 50%BC / OMAR / OMIGA per column
    anchors = {"original": (0.21, -0.02, -4.06, 0.66), "madiff_like": (0.33, -0.25, 0.26, 0.93),
               "codi_no_comp": (0.36, 0.11, 0.35, 0.94), "codi_privileged": (0.59, 0.56, 0.76, 1.01),
               "codi": (0.58, 0.43, 0.50, 0.96)}
    for column, values in anchors.items():
        assert tuple(cn[learner][column] for learner in ("BC", "50%BC", "OMAR", "OMIGA")) == values, column
    assert paper["rows"]["World"]["OMAR"]["codi"] == -0.40 and set(paper["rows"]) == {"CN", "World", "3m", "Zerg_3v4"}
    assert paper["average"] == {"original": 0.08, "MBTS": -0.21, "madiff_like": 0.05, "MADiTS": 0.04,
                                "codi_no_comp": 0.24, "codi_privileged": 0.45, "codi": 0.63}


def test_spread_check_judges_files_by_their_observations(tmp_path):
    """Coverage (Fig. 4c), the return the env pays for the observed positions and collisions, by hand."""
    from envs import make_env

    bench = load_bench()
    n, T1 = 2, 4
    info = {"n_agents": n, "n_actions": 5, "obs_shape": 12, "state_shape": 24, "episode_limit": T1 - 1}
    obs = np.zeros((2, T1, n, 12), np.float32)  # position at obs[2:4], landmark offsets at obs[4:8], teammate's [8:10]

    def place(e, t, agents, landmarks):
        for i, p in enumerate(agents):
            obs[e, t, i, 2:4] = p
            obs[e, t, i, 4:8] = (np.array(landmarks) - p).reshape(-1)
            obs[e, t, i, 8:10] = np.array(agents[1 - i]) - p

    place(0, 0, [(0, 0), (3, 2)], [(3, 4), (0, 1)])  # closest: landmark 0 at 2 (agent 1), 1 at 1 (agent 0): -3
    for t in (1, 2, 3):
        place(0, t, [(0, 1), (3, 4)], [(3, 4), (0, 1)])  # covered, apart: reward 0
    place(1, 0, [(0, 0), (0, 0)], [(1, 0), (0, 1)])  # coverage -2, the agents touch
    place(1, 1, [(0, 0), (0, 0)], [(0, 3), (4, 0)])  # coverage -7, touching: reward 2 x (-7) - 2 x 1 = -16
    filled = np.ones((2, T1, 1), np.uint8)
    filled[1, 2:] = 0  # episode 1 ends after one transition
    arrays = {"obs": obs, "state": obs.reshape(2, T1, -1), "actions": np.zeros((2, T1, n, 1), np.int64),
              "avail_actions": np.ones((2, T1, n, 5), np.uint8), "reward": np.zeros((2, T1, 1), np.float32),
              "terminated": np.zeros((2, T1, 1), np.uint8), "filled": filled}
    path = str(tmp_path / "spread.h5")
    with DatasetWriter(path, info, "mpe", {"scenario": "spread", "N": n}, {"env": "mpe"}) as w:
        w.add_arrays(arrays, qualities=np.array([["expert", "random"], ["random", "expert"]]))
    got = bench.spread_check(path, make_env("mpe", scenario="spread", N=n, max_cycles=T1 - 1))
    assert got.pop("segment_gap") == {"horizon": 8, "quantiles": [0.0, 0.0, 0.0],
                                      "at_or_under": {"0.15": 1.0, "0.3": 1.0}}
    assert got == pytest.approx({"first": -2.5, "last": (0.0 - 7.0) / 2, "gain": (3 - 5) / 2, "stored_return": 0.0,
                                 "obs_return": (0 - 16) / 2, "collisions": (0 + 1) / 2, "view_gap": 0.0,
                                 # at the end: episode 0's agents on different landmarks 18 ** 0.5 apart, episode 1's
                                 # both nearest landmark 0 (3 away, landmark 1 is 4), on the same spot
                                 # reach: episode 0's agents on their landmarks (0), episode 1's 3 from landmark 0
                                 "claimed": (2 + 1) / 2, "end_pair": (18 ** 0.5 + 0) / 2, "end_reach": (0 + 3) / 2})
    obs[1, 1, 1, 4:6] += [3, 4]  # agent 1 sees landmark 0 five away from where agent 0 does, on 1 of 6 rows
    generated = {"env": "mpe", "generation": {"horizon": 2}}  # a generated file's settings: 1 observation a segment
    with DatasetWriter(str(tmp_path / "gap.h5"), info, "mpe", {"scenario": "spread", "N": n}, generated) as w:
        w.add_arrays(arrays, qualities=np.array([["expert", "random"], ["random", "expert"]]))
    got = bench.spread_check(str(tmp_path / "gap.h5"), make_env("mpe", scenario="spread", N=n, max_cycles=T1 - 1))
    assert got["view_gap"] == pytest.approx(5 / 6) and got["obs_return"] == pytest.approx(-8)
    # H = 2: episode 0 has segments at observations 1, 2, 3 (gap 0), episode 1 (one transition) one at observation 1
    # (gap 5); the first observation is never a segment's (it is inpainted)
    assert got["segment_gap"]["horizon"] == 2
    assert got["segment_gap"]["quantiles"] == pytest.approx([0.0, 0.0, 3.5])
    assert got["segment_gap"]["at_or_under"] == {"0.15": 0.75, "0.3": 0.75}


def test_learners_of_earlier_commands_are_reused_not_rerun(tmp_path):
    """`--learners bc bc50` then `--learners omar omiga`: a run or report of all four finds both learn sweeps and
    plans a new one only for a learner neither holds."""
    bench = load_bench()
    base = ["--envs", "mpe_spread", "--n-agents", "3", "--results", str(tmp_path / "results"), "--out", str(tmp_path)]
    all_four = bench.Plan(bench.parse_args(base))
    c = all_four.cells[0]
    assert all_four.learn_groups(c, "original") == [all_four.learn(c, "original")]  # nothing on disk
    for learners in (["bc50", "bc"], ["omar"]):  # spelled in any order
        plan = bench.Plan(bench.parse_args([*base, "--learners", *learners]))
        (diff,) = plan.learn_groups(c, "original")
        assert [e["alg"] for e in diff["entries"]] == sorted(learners)
        write_sweep(bench.sweep_folder(plan.a, "codi_learn", diff), [])
    groups = all_four.learn_groups(c, "original")
    assert [[e["alg"] for e in g["entries"]] for g in groups] == [["bc", "bc50"], ["omar"], ["omiga"]]
    assert [os.path.isdir(bench.sweep_folder(all_four.a, "codi_learn", g)) for g in groups] == [True, True, False]
    # a dataset without sweeps on disk still runs as one sweep of all four
    assert len(all_four.learn_groups(c, "codi", "/g.h5")) == 1
    # a later command with fewer learners reads a larger sweep; one overlapping a taken sweep is not read twice
    bc_only = bench.Plan(bench.parse_args([*base, "--learners", "bc"]))
    assert bc_only.learn_groups(c, "original") == [groups[0]]
    write_sweep(bench.sweep_folder(plan.a, "codi_learn", all_four.learn(c, "original", None, ["bc50", "omar"])), [])
    again = [[e["alg"] for e in g["entries"]] for g in all_four.learn_groups(c, "original")]
    assert again == [["bc", "bc50"], ["omar"], ["omiga"]]


def write_manifest(folder, trials, runs):
    """A manifest as src/sweep.py records it: each planned trial's fields, completed with its Sacred run."""
    os.makedirs(folder)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"name": os.path.basename(folder), "trials": [
            {**{k: t[k] for k in ("id", "alg", "env", "seed", "overrides")}, "status": "COMPLETED",
             "sacred_run": runs[t["id"]]} for t in trials]}, f)


def test_label_and_augment_runs_of_other_cell_sets_are_found_not_rerun(tmp_path):
    """`--n-agents 3`, then `--n-agents 3 4`: the second command finds N = 3's label and augment runs in the first
    command's sweeps (same trial, same overrides), runs its phases 1-2 for N = 4 only, and its --check estimate counts
    only what is left; a run with other overrides (another delta) is not taken for this one."""
    bench = load_bench()
    res = tmp_path / "results"
    base = ["--seeds", "1", "2", "--learners", "bc", "--results", str(res), "--out", str(tmp_path / "out")]
    first = bench.Plan(bench.parse_args(["--envs", "mpe_spread", "--n-agents", "3", *base]))
    root, run_id = str(res), iter(range(1, 100))
    for base_name, diff in (("codi_label", first.label()), ("codi_augment", first.augment())):
        trials = bench.expanded(base_name, diff, root)
        runs = {t["id"]: write_run(root, t["alg"], "spread_N3", next(run_id), {}, {}) for t in trials}
        write_manifest(bench.sweep_folder(first.a, base_name, diff), trials, runs)
    # the same cell with another delta: its own sweep, whose runs must not stand in for the plain ones
    other = bench.Plan(bench.parse_args(["--envs", "mpe_spread", "--n-agents", "3", "--augment-with", "delta=0.5",
                                         *base]))
    assert bench.sweep_name("codi_augment", other.augment()) != bench.sweep_name("codi_augment", first.augment())

    both = bench.Plan(bench.parse_args(["--envs", "mpe_spread", "--n-agents", "3", "4", *base]))
    state = bench.State(both)
    assert state.runs["spread3"]["label"].endswith("/1") and state.runs["spread3"]["madiff_like"]
    assert state.runs["spread4"]["label"] is None and state.runs["spread4"]["codi"] is None
    assert [c.tag for c in state.todo_label] == ["spread4"]
    assert state.todo_augment == {("spread4", "codi"), ("spread4", "madiff_like")}
    todo = bench.expanded("codi_augment", both.augment(state.todo_augment), root)
    assert sorted(t["id"] for t in todo) == ["codi_spread4-s1", "madiff_like_spread4-s1"]
    assert all(t["overrides"]["env_args.N"] == 4 for t in todo)
    # every cell planned from nothing when no sweep holds them
    assert bench.State(other).todo_augment == {("spread3", "codi"), ("spread3", "madiff_like")}

    counts, pending, left = bench.print_plan(both, state)
    assert counts["label"] == 2 and counts["augment"] == 4  # every run of the plan; N = 3's were done before
    assert sorted(t["id"] for phase, t in left if phase in ("label", "augment")) == [
        "codi_spread4-s1", "label_spread4-s1", "madiff_like_spread4-s1"]
    cpu, wall = bench.estimate(both, left)
    learn_left = [t for phase, t in left if phase == "learn"]
    assert cpu["learn"] == pytest.approx(sum(t["t_max"] * 0.013 * (4 / 3 if t["overrides"].get("env_args.N") == 4
                                                                   else 1) for t in learn_left))
    assert cpu["augment"] > 0 and wall > 0


def test_a_run_recorded_through_a_linked_results_folder_is_the_same_trial(tmp_path):
    """A checkout whose results/ is a link to another's plans trials with its own path; the runs another command
    completed record the real one. Both name one folder, so the run counts (the Fig. 5 report over cells run
    separately depends on it)."""
    bench = load_bench()
    real = tmp_path / "results"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    trial = {"id": "label_spread3-s1", "alg": "label_agent_quality", "env": "mpe_spread", "seed": 1,
             "overrides": {"local_results_path": str(tmp_path / "link"), "label_name": "noisy80"}}
    recorded = {**trial, "overrides": {**trial["overrides"], "local_results_path": str(real)},
                "status": "COMPLETED", "sacred_run": "run/1"}
    done = [(str(tmp_path / "sweeps" / "codi_label"), recorded)]
    assert bench.completed_anywhere(str(tmp_path / "sweeps" / "codi_label-0123abcd"), trial, done) == "run/1"
    other = {**recorded, "overrides": {**recorded["overrides"], "label_name": "noisy70"}}
    assert bench.completed_anywhere(str(tmp_path / "sweeps" / "x"), trial, [(done[0][0], other)]) is None


def test_grid_check_judges_lbf_files_by_their_observations(tmp_path):
    """On the grid, food collected and terminals against the dataset's own recorded states; an episode moved off
    the grid by up to 0.3 counts as off it and still collects the same food (the hooks round)."""
    from envs import make_env
    from helpers import write_random_dataset
    from offline import OfflineDataset

    bench = load_bench()
    args = {"key": "Foraging-6x6-2p-3f-v3", "time_limit": 30}
    path, _ = write_random_dataset(str(tmp_path / "real.h5"), "lbf_8x8_2p_2f_coop", 30, env_args=args)
    env = make_env("lbf", **args)
    real = OfflineDataset.load(path).arrays()
    filled = real["filled"][..., 0] > 0
    last = filled.sum(1) - 1
    food = real["state"][..., 6:15].reshape(*filled.shape, 3, 3)[..., 2]  # state: agents (2 x 3), then 3 foods
    collected = ((food[:, 0] > 0) & (food[np.arange(len(last)), last] <= 0)).sum(1)
    assert collected.sum() > 0  # random play on the 6x6 grid collects some food
    got = bench.grid_check(path, env)
    assert got == pytest.approx({"on_grid": 1.0, "off_grid": 0.0, "food": collected.mean(),
                                 "terminal": real["terminated"][..., 0].any(1).mean(),
                                 "stored_return": real["episode_return"].mean(), "length": last.mean()})
    wobbly = {k: v for k, v in real.items() if k in ("obs", "state", "actions", "avail_actions", "reward",
                                                     "terminated", "filled")}
    wobbly["obs"] = real["obs"].copy()
    wobbly["obs"][0] += np.random.default_rng(0).uniform(-0.3, 0.3, wobbly["obs"][0].shape) * filled[0, :, None, None]
    ds = OfflineDataset.load(path, lazy=True)
    info, env_args = dict(ds.env_info), json.loads(ds.attrs["env_args"])
    ds.close()
    with DatasetWriter(str(tmp_path / "wobbly.h5"), info, "lbf", env_args, {"env": "lbf"}) as w:
        w.add_arrays(wobbly, qualities="random")
    got = bench.grid_check(str(tmp_path / "wobbly.h5"), env)
    assert got["on_grid"] == pytest.approx(1 - filled[0].sum() / filled.sum(), abs=0.02)  # episode 0 is off it
    assert 0 < got["off_grid"] <= 0.3 and got["food"] == pytest.approx(collected.mean())


def test_the_estimate_counts_only_the_stages_an_augment_run_has_left():
    """A run given augment_checkpoint only generates (config/runs/codi.yaml), augment_stage=<stage> runs that stage:
    --check must not price either as a full training."""
    bench = load_bench()
    full = bench.augment_s({"alg": "codi", "overrides": {}}, 10000, 60.0)
    assert full == pytest.approx(bench.LABELER_S + 10000 / bench.AUGMENT_STEPS_PER_S + 60.0)
    madiff = bench.augment_s({"alg": "madiff_like", "overrides": {}}, 10000, 60.0)
    assert madiff == pytest.approx(full - bench.LABELER_S)
    assert bench.augment_s({"alg": "codi", "overrides": {"augment_checkpoint": "results/augment/codi/x/abc"}},
                           10000, 60.0) == 60.0
    assert bench.augment_s({"alg": "codi", "overrides": {"augment_stage": "train"}}, 10000, 60.0) == \
        pytest.approx(10000 / bench.AUGMENT_STEPS_PER_S)
    assert bench.augment_s({"alg": "codi", "overrides": {"augment_stage": "labeler"}}, 10000, 60.0) == bench.LABELER_S
    staged = {"augment_checkpoint": "results/augment/codi/x/abc", "augment_stage": "train"}  # the stage decides
    train_only = bench.augment_s({"alg": "codi", "overrides": staged}, 10000, 60.0)
    assert train_only == pytest.approx(10000 / bench.AUGMENT_STEPS_PER_S)


def test_a_cell_with_fewer_seeds_says_so_and_so_does_the_average():
    """A cell read while its seeds run once printed like a full one, and the average weighed it as one silently."""
    bench = load_bench()
    full = {"n": 3, "finals": [0.2, 0.3, 0.4], "normalised_mean": 0.3, "normalised_std": 0.1}
    part = {"n": 2, "finals": [0.5, 0.7], "normalised_mean": 0.6, "normalised_std": 0.1}
    data = {"preset": "cpu", "labeler": "oracle", "seeds": [1, 2, 3], "learners": ["BC"], "datasets": ["original"],
            "offline_steps": 20, "reevaluate": None, "augment_with": None, "paper": None,
            "cells": {"spread3": {"env": "mpe_spread", "n_agents": 3, "fixed_n": False, "references": {},
                                  "scores": {"BC": {"original": part}, "50%BC": {"original": full}}}}}
    data["averages"] = bench.averages(data)
    md = bench.markdown(data)
    assert "| BC | 0.600 ± 0.100 (n=2 of 3) [0.60 ± 0.10] |" in md
    assert "| **average** (normalised) | all | 0.45 (2 rows, 1 with fewer seeds) |" in md
