"""bench/misodice_table.py: its sweeps are the shipped config/sweeps/misodice_lbf_*.yaml files and check like any
sweep (no Ray), and the whole chain (label -> O-MAPL -> the 8 methods -> results.py tables) on a climbing-shaped
mixture through a local Ray, whose table numbers are those of the Sacred runs underneath."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.labeling.datasets import INFO, write_dataset

from sweeps.spec import expand, load_sweep, validate
from utils.config import read_yaml
from utils.paths import REPO_ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("misodice_table", os.path.join(REPO_ROOT, "bench",
                                                                                 "misodice_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_k_tables_ceiling_ranks_by_the_score_the_sets_labels_were_judged_by(tmp_path):
    """Table 6's ceiling (label_precisions) ranks by the preference set's oracle score, as O-MAPL's own report: on a
    mixture whose poor episodes earn more, the quality-judged set's ceiling finds every expert, the return's none."""
    from types import SimpleNamespace as SN

    from offline.label_store import content_fingerprint, write_episode_labels, write_preferences
    bench = load_bench()
    E, T1 = 30, INFO["episode_limit"] + 1
    rewards = np.ones((E, T1, 1))
    rewards[: E // 5] = -1  # the first fifth is expert (write_dataset's default qualities) and earns less
    path = write_dataset(tmp_path / "mix_misodice.h5", E=E, rewards=rewards)
    fp = content_fingerprint(path)
    write_episode_labels(path, {"q_s0_return_hat": -np.arange(E, dtype=np.float64)}, {}, fp)  # O-MAPL: first = best
    pairs = np.stack([np.arange(0, E, 2), np.arange(1, E, 2)], 1)
    label = np.ones(len(pairs), dtype=np.float32)
    write_preferences(path, "q", pairs, label, {"settings": {"oracle_key": "quality"}}, fp)
    write_preferences(path, "r", pairs, label, {}, fp)  # no settings: judged by the return
    plan = SN(data=path, env="climbing", a=SN(with_={}))
    k = E // 5
    q = bench.label_precisions(plan, "q", [0], [k, 2 * k])
    assert q[k]["ceiling_key"] == "quality" and q[k]["ceiling"] == 1.0 and q[2 * k]["ceiling"] == 0.5
    assert q[k]["topk_precision"]["finals"] == [1.0]  # the ranking itself is the runs' label, whatever the ceiling
    r = bench.label_precisions(plan, "r", [0], [k])
    assert r[k]["ceiling_key"] == "return" and r[k]["ceiling"] == 0.0
    missing = bench.label_precisions(plan, "llm", [0], [k])[k]  # no such set: the return, and the key says why
    assert missing["ceiling"] == 0.0 and missing["ceiling_key"].startswith("return (preference set 'llm' unreadable")
    assert missing["topk_precision"] is None  # no llm_s0_return_hat label


def test_the_shipped_sweep_files_are_the_default_plan_and_every_trial_checks(tmp_path):
    bench = load_bench()
    plan = bench.Plan("lbf_8x8_2p_2f_coop", bench.parse_args(["--tables", "all", "--out", str(tmp_path)]))
    assert [base for _, base, _ in plan.sweeps] == [
        "misodice_lbf_label", "misodice_lbf_oracle_omapl", "misodice_lbf_oracle", "misodice_lbf_noisy75_omapl",
        "misodice_lbf_noisy75", "misodice_lbf_gt", "misodice_lbf_k", "misodice_lbf_alpha"]
    files = plan.named(str(tmp_path))
    for (_, base, spec), (_, _, name, path) in zip(plan.sweeps, files):
        assert name == base and path == os.path.join(bench.SWEEP_DIR, f"{base}.yaml"), (name, path)
        assert read_yaml(path) == spec  # regenerate with: python bench/misodice_table.py --write-sweeps --tables all
    counts = {name: len(validate(expand(load_sweep(path)))) for _, _, name, path in files}
    assert counts == {"misodice_lbf_label": 2, "misodice_lbf_oracle_omapl": 12, "misodice_lbf_oracle": 24,
                      "misodice_lbf_noisy75_omapl": 8, "misodice_lbf_noisy75": 24, "misodice_lbf_gt": 20,
                      "misodice_lbf_k": 16, "misodice_lbf_alpha": 20}
    # BC(beta=0) reads no labels: it runs once per seed, in the first labeler's phase 2 only
    bc0 = {name: sum(e["name"] == "bc_beta0" for e in load_sweep(path)["entries"]) for _, _, name, path in files}
    assert {k: v for k, v in bc0.items() if v} == {"misodice_lbf_oracle_omapl": 4}
    methods = load_sweep(files[2][3])
    seed1 = [e for e in methods["entries"] if e["seeds"] == [1]]
    assert {e["with"].get("offline_expert") for e in seed1 if e["alg"] != "omiga"} == {"label:oracle_s1_expert"}
    assert [e["with"] for e in seed1 if e["alg"] == "omiga"] == [
        {"name": "marl_sl", "offline_reward": "label:oracle_s1_reward_hat"}]


def test_quick_is_one_seed_of_oracle_labels_with_fewer_steps(tmp_path):
    bench = load_bench()
    results = tmp_path / "results"
    plan = bench.Plan("lbf_8x8_2p_2f_coop", bench.parse_args(["--quick", "--out", str(tmp_path), "--results",
                                                             str(results)]))
    assert [base for _, base, _ in plan.sweeps] == ["misodice_lbf_label", "misodice_lbf_oracle_omapl",
                                                    "misodice_lbf_oracle"]
    files = plan.named(str(tmp_path))
    assert all(name.startswith(f"{base}-") and path.startswith(str(tmp_path)) for _, base, name, path in files)
    trials = [t for _, _, name, path in files for t in validate(expand({**load_sweep(path), "name": name}))]
    assert {t["seed"] for t in trials} == {0} and len(trials) == 1 + 3 + 6
    steps = {t["alg"] if t["alg"] != "bc_beta" else f"bc{t['overrides']['bc_beta']:g}": t["t_max"]
             for t in trials if t["offline"]}
    assert steps == {"omapl": 2000, "marl_sl": 2000, "bc0": 3000, "bc0.5": 3000, "bc1": 3000, "omiga": 3000,
                     "indd": 3000, "misodice_vdn": 3000, "misodice": 3000}
    dice = [t for t in trials if t["alg"] == "misodice"][0]["overrides"]
    assert (dice["disc_steps"], dice["nu_steps"]) == (428, 857)
    checked = bench.check(plan, files)
    assert [(phase, len(trials), done, walls) for phase, trials, done, walls in checked] == [
        ("label", 1, set(), {}), ("omapl", 3, set(), {}), ("methods", 6, set(), {})]
    cpu, wall, basis = bench.estimate(checked, jobs=2)
    assert cpu < 2 * 3600 and wall < 40 * 60 and basis.startswith("LBF's")  # the rates measured on the 2-core VM
    # a resumed study estimates what is left: trials COMPLETED in their sweep's manifest are not counted again, and
    # the completed ones' own wall times replace LBF's rates (here O-MAPL took 3x LBF's: 2000 steps in 1/7 x 6000 s)
    _, _, name, _ = files[1]
    os.makedirs(results / "sweeps" / name)
    (results / "sweeps" / name / "manifest.json").write_text(json.dumps({"trials": [
        {"id": t["id"], "status": "COMPLETED" if t["alg"] == "omapl" else "ERROR", "attempts": 1,
         "resumed_from": None, "run_s": 2000 * 3 / 7} for t in checked[1][1]]}))
    left = bench.check(plan, files)
    omapl = {t["id"] for t in checked[1][1] if t["alg"] == "omapl"}
    assert left[1][2] == omapl and left[1][3] == pytest.approx({i: 2000 * 3 / 7 for i in omapl})
    rates, n_measured, ratio = bench.step_rates(left)
    assert n_measured == 1 and ratio == pytest.approx(3.0)
    assert rates["omapl"] == pytest.approx(3 * bench.SEC_PER_STEP["omapl"])
    assert rates["misodice"] == pytest.approx(3 * bench.SEC_PER_STEP["misodice"])  # not yet run: LBF's x the ratio
    cpu_left, _, basis = bench.estimate(left, jobs=2)
    assert "1 completed trial" in basis and "x 3.00" in basis
    assert cpu_left == pytest.approx(3 * (cpu - 2000 * bench.SEC_PER_STEP["omapl"]))
    # only one uninterrupted attempt measures a trial: a resumed or retried one ran part of it (its stamps may span
    # the hours the sweep was down), and an entry without run_s (older sweeps) counts as done at LBF's rates
    assert bench.wall_seconds({"run_s": 90.0, "attempts": 1, "resumed_from": None}) == 90.0
    for record in ({"run_s": 90.0, "resumed_from": "/m/100"}, {"run_s": 90.0, "attempts": 2}, {"run_s": 0.0},
                   {"started": "2026-12-05T07:00:00", "ended": "2026-12-06T07:00:00"}):
        assert bench.wall_seconds(record) is None, record


@pytest.mark.long
def test_the_chain_on_climbing_gives_the_numbers_of_its_sacred_runs(tmp_path):
    pytest.importorskip("ray")
    data = tmp_path / "data"
    data.mkdir()
    E, T1 = 30, INFO["episode_limit"] + 1
    rewards = np.random.default_rng(0).integers(-3, 1, size=(E, T1, 1))
    rewards[: E // 5] += 4  # the first fifth (ground-truth expert) earns more
    write_dataset(data / "mix.h5", E=E, rewards=rewards)
    refs = {"random": -40.0, "expert": 20.0, "mix": -10.0}  # the collect run's returns.json layout
    (data / "returns.json").write_text(json.dumps({"datasets": [
        {"dataset": k, "episodes": 10, "return_mean": v, "return_std": 1.0, "composition": k}
        for k, v in refs.items()]}))
    out, results = tmp_path / "bench", tmp_path / "results"
    cmd = [sys.executable, os.path.join(REPO_ROOT, "bench", "misodice_table.py"), "--envs", "climbing", "--data-dir",
           str(data), "--dataset", "mix", "--results", str(results), "--out", str(out), "--seeds", "0",
           "--labelers", "oracle", "--pairs", "60", "--topk", "6", "--steps", "6", "--preference-steps", "4",
           "--tables", "k", "--k-values", "3", "--jobs", "2", "--num-cpus", "2", "test_nepisode=1",
           "save_model=False"]
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=540)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = json.loads((out / "misodice_climbing.json").read_text())
    md = (out / "misodice_climbing.md").read_text()
    assert (out / "misodice.png").stat().st_size > 0
    oracle = table["labelers"]["oracle"]

    def info(run):
        return json.loads(open(os.path.join(run, "info.json")).read())

    def config(run):
        return json.loads(open(os.path.join(run, "config.json")).read())

    expected = {"BC(β=0)": ("bc_beta", ""), "BC(β=0.5)": ("bc_beta", "label:oracle_s0_expert"),
                "BC(β=1)": ("bc_beta", "label:oracle_s0_expert"), "OMAPL": ("omapl", None),
                "INDD": ("indd", "label:oracle_s0_expert"), "MARL-SL": ("marl_sl", None),
                "MisoDICE-VDN": ("misodice_vdn", "label:oracle_s0_expert"),
                "MisoDICE": ("misodice", "label:oracle_s0_expert")}
    for label, (name, expert) in expected.items():
        c = oracle["methods"][label]
        assert c["n"] == 1 and len(c["runs"]) == 1, (label, c)
        run = c["runs"][0]
        cfg = config(run)
        assert cfg["name"] == name and cfg["seed"] == 0 and cfg["env"] == "matrix_game"
        if expert is not None:
            assert cfg["offline_expert"] == expert
        assert c["mean"] == info(run)["test_return_mean"][-1]  # the table's number is the run's last evaluation
        assert c["normalised_mean"] == pytest.approx((c["mean"] + 40.0) / 60.0)  # random -> 0, expert -> 1
        assert f"| {label} | {c['mean']:.3f} (n=1) [{c['normalised_mean']:.2f}] |" in md
    assert config(oracle["methods"]["MARL-SL"]["runs"][0])["offline_reward"] == "label:oracle_s0_reward_hat"
    assert config(oracle["methods"]["BC(β=0.5)"]["runs"][0])["bc_beta"] == 0.5
    omapl = info(oracle["methods"]["OMAPL"]["runs"][0])
    assert oracle["topk_precision"]["mean"] == omapl["topk_precision_sum"][-1]
    assert oracle["ceiling"]["precision"] == omapl["labels"]["ceiling"]["precision"]
    assert omapl["labels"]["names"] == ["oracle_s0_expert", "oracle_s0_return_hat"]
    # Table 6: K = 3 is MisoDICE on the top 3 of the same O-MAPL ranking (no O-MAPL run of its own); K = 6 is phase 3
    k3, k6 = table["tables"]["k"]["3"], table["tables"]["k"]["6"]
    assert config(k3["misodice"]["runs"][0])["offline_expert"] == "top:oracle_s0_return_hat:3"
    assert k6["misodice"] == oracle["methods"]["MisoDICE"]
    from offline import OfflineDataset
    ds = OfflineDataset.load(str(data / "mix_misodice.h5"))
    top3 = np.argsort(-np.asarray(ds.label("oracle_s0_return_hat")), kind="stable")[:3]
    assert k3["topk_precision"]["finals"] == [float(np.mean(top3 < E // 5))]  # ground-truth experts: the first fifth
    assert k6["topk_precision"]["finals"] == pytest.approx([omapl["topk_precision_sum"][-1]])
    assert k3["ceiling"] == 1.0 and f"| 3 | {k3['misodice']['mean']:.3f} (n=1)" in md
    # the K table's ceiling ranks by the score the labels were judged by, as O-MAPL's own report at its K
    assert k6["ceiling"] == omapl["labels"]["ceiling"]["precision"]
    assert k3["ceiling_key"] == k6["ceiling_key"] == omapl["labels"]["ceiling"]["oracle_key"] == "return"
    label_run = oracle["label"]["sacred_run"]
    assert oracle["label"]["accuracy"] == info(label_run)["labeling"]["accuracy"]
    assert oracle["label"]["accuracy"]["items"] == 60 and oracle["label"]["accuracy"]["agreement_return_nontie"] == 1
    assert os.path.isfile(data / "mix_misodice.h5")  # labels went into the study copy
    assert "random -40.000 [0.00], expert 20.000 [1.00], mix -10.000 [0.50]" in md
    # rerun: every sweep is finished (--resume), nothing runs again, the same numbers come out; a second labeler
    # (not run) shares the first one's BC(beta=0) row, which reads no labels and so runs once
    i = cmd.index("--labelers") + 2
    again = subprocess.run(cmd[:2] + ["--report-only"] + cmd[2:i] + ["noisy_oracle:0.9"] + cmd[i:], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    labelers = json.loads((out / "misodice_climbing.json").read_text())["labelers"]
    # everything but the label run's info (the label sweep now has a second, unrun entry: another sweep)
    assert {k: v for k, v in labelers["oracle"].items() if k != "label"} == {
        k: v for k, v in oracle.items() if k != "label"}
    assert {k for k, v in labelers["noisy90"]["methods"].items() if v} == {"BC(β=0)"}
    assert labelers["noisy90"]["methods"]["BC(β=0)"] == oracle["methods"]["BC(β=0)"]


def test_paths_in_sweep_files_are_spelt_one_way_from_any_checkout(tmp_path, monkeypatch):
    """A checkout whose results/ is a symlink to a shared folder (a worktree) names the shared files as results/...,
    as the main checkout does: the sweeps' specs, and so their names, agree."""
    bench = load_bench()
    shared, checkout = tmp_path / "main" / "results", tmp_path / "worktree"
    (shared / "augment").mkdir(parents=True)
    checkout.mkdir()
    os.symlink(shared, checkout / "results")
    monkeypatch.setattr(bench, "ROOT", str(checkout))
    monkeypatch.setattr(bench, "RESULTS_ROOT", str(checkout / "results"))
    for spelling in (checkout / "results" / "augment" / "g.h5", shared / "augment" / "g.h5"):
        assert bench.rel(str(spelling)) == os.path.join("results", "augment", "g.h5")
    assert bench.rel(str(tmp_path / "elsewhere.h5")) == str(tmp_path / "elsewhere.h5")


def test_check_names_a_missing_source_dataset(tmp_path, capsys):
    """--check once printed the plan and exited 0 for a dataset that does not exist: the run would then stop."""
    bench = load_bench()
    assert bench.main(["--check", "--dataset", "no_such_mixture", "--data-dir", str(tmp_path),
                       "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no dataset" in err and "no_such_mixture.h5" in err and "scripts/reference_datasets.py" in err


def test_a_cell_with_fewer_finished_seeds_than_asked_says_so():
    """A study read while it runs (--report-only) must not pass 2 seeds off as the 4 the header names."""
    from misodice_table import fmt_cell

    cell = {"n": 2, "finals": [0.3, 0.4]}
    assert fmt_cell(cell, of=4) == "0.350 ± 0.050 (n=2 of 4)"
    assert fmt_cell(cell, of=2) == "0.350 ± 0.050"
    assert fmt_cell({"n": 1, "finals": [0.3]}, of=1) == "0.300 (n=1)"


def test_the_figure_draws_no_error_bar_for_one_run_and_marks_each_bars_n(tmp_path, monkeypatch):
    """A one-run cell once got an error bar of 0 under a "mean ± std over seeds" caption."""
    from analysis import plots

    bench = load_bench()
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, out, stem: figs.append(fig) or [])
    labels = [m[0] for m in bench.METHODS]
    methods = {labels[0]: {"mean": 1.0, "std": 0.5, "n": 3}, labels[1]: {"mean": 2.0, "std": None, "n": 1}}
    bench.figure([{"env": "lbf", "labelers": {"oracle": {"methods": methods}}, "references": {}, "seeds": [1, 2, 3],
                   "quick": False}], str(tmp_path))
    [ax] = figs[0].axes
    [bars] = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    segments = bars.lines[2][0].get_segments()
    assert len(segments) == 1 and np.ptp(segments[0][:, 1]) == pytest.approx(1.0)  # the n=3 cell's ± 0.5 only
    assert sorted(t.get_text() for t in ax.texts) == ["n=1", "n=3"]


def test_a_single_beta_or_alpha_still_finds_its_cells(tmp_path):
    """results.py names a --by key only where it differs between runs: with one β (phase 2 read alone) or one α,
    BC(β=0) and the α=0 row once showed "–" though their runs had finished."""
    from tests.analysis.test_results_cli import write_run

    bench = load_bench()
    root = str(tmp_path / "sacred")
    for seed, final in ((1, 0.4), (2, 0.5)):
        write_run(root, "bc_beta", "lbf", seed, [0, 100], [0.0, final], run="offline", bc_beta=0.0)
        write_run(root, "omapl", "lbf", 10 + seed, [0, 100], [0.0, final], run="offline")
        write_run(root, "misodice", "lbf", 20 + seed, [0, 100], [0.0, final], run="offline", misodice_alpha=0.0)
    scores = bench.results_call([root], str(tmp_path / "beta"))[0]
    assert bench.cell(scores.get(("bc_beta", 0.0)))["finals"] == [0.4, 0.5]
    assert bench.cell(scores.get(("omapl", None)))["n"] == 2  # a method without the key stays under None
    scores = bench.results_call([root], str(tmp_path / "alpha"), by="misodice_alpha")[0]
    assert bench.cell(scores.get(("misodice", 0.0)))["finals"] == [0.4, 0.5]


def test_a_normalised_std_of_zero_is_printed():
    """Two seeds that agree have std 0.0, which once read as missing and printed like a one-run cell."""
    c = {"n": 2, "finals": [0.3, 0.3], "normalised_mean": 0.98, "normalised_std": 0.0}
    assert load_bench().fmt_cell(c, normalised=True, of=2) == "0.300 ± 0.000 [0.98 ± 0.00]"
