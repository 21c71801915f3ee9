"""src/results.py and its library (src/analysis) on synthetic Sacred runs with known numbers."""
import csv
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest
import scipy.stats

from analysis import stats
from results import main
from utils.runs import find_runs, group_runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/analysis/ -> repo
BASE = {"run": "online", "env": "matrix_game", "evaluate": False, "lr": 0.0005, "local_results_path": "results",
        "t_max": 300}
REPS = 300


def write_run(root, alg, env, run_id, t, values, status="COMPLETED", **config):
    """results/sacred/<alg>/<env>/<id>/ with config.json, run.json and info.json as Sacred writes them."""
    d = os.path.join(root, alg, env, str(run_id))
    os.makedirs(d)
    config = {**BASE, "name": alg, "seed": run_id, "env_args": {"game": env, "seed": run_id}, **config}
    json.dump(config, open(os.path.join(d, "config.json"), "w"))
    beat = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
    json.dump({"status": status, "heartbeat": beat}, open(os.path.join(d, "run.json"), "w"))
    json.dump({"test_return_mean": values, "test_return_mean_T": t}, open(os.path.join(d, "info.json"), "w"))
    return d


# final scores: qmix on penalty 1, 2, 6 (mean 3, std sqrt(14/3)); on climbing 10, 20, 30, 40;
# vdn on penalty 0, 4; on climbing 5 (one run)
FINALS = {("qmix", "penalty"): [1.0, 2.0, 6.0], ("qmix", "climbing"): [10.0, 20.0, 30.0, 40.0],
          ("vdn", "penalty"): [0.0, 4.0], ("vdn", "climbing"): [5.0]}


@pytest.fixture
def sacred(tmp_path):
    root = str(tmp_path / "sacred")
    run_id = 0
    for (alg, env), finals in FINALS.items():
        for final in finals:
            run_id += 1
            write_run(root, alg, env, run_id, [0, 100, 200], [0.0, final / 2, final])
    write_run(root, "qmix", "penalty", 90, [0, 100], [0.0, 50.0], status="FAILED")
    write_run(root, "qmix", "penalty", 91, [0, 100], [0.0, 50.0], status="INTERRUPTED")
    write_run(root, "qmix", "penalty", 92, [200], [99.0], evaluate=True)
    return root


def run_results(*argv, **kw):
    return main([*map(str, argv), "--reps", str(REPS)], **kw)


def test_exact_means_stds_counts_and_skipped(sacred, tmp_path, capsys):
    out = tmp_path / "out"
    result = run_results(sacred, "--out", out)
    groups = {(s.group.name, s.group.env): s for s in result["scores"]}
    assert set(groups) == set(FINALS)
    for key, finals in FINALS.items():
        s = groups[key]
        assert s.n == len(finals) and s.finals.tolist() == finals
        if len(finals) > 1:
            assert s.ci[0] <= np.mean(finals) <= s.ci[1]
        else:
            assert s.ci is None
    assert len(result["skipped"]) == 3
    printed = capsys.readouterr().out
    assert "| qmix | penalty | env steps | 3 | 3.000 ± 2.160 |" in printed  # std: population, sqrt(14/3)
    assert "| qmix | climbing | env steps | 4 | 25.000 ± 11.180 |" in printed
    assert "| vdn | climbing | env steps | 1 (n=1) | 5.000 | – |" in printed  # one run: no ±, no CI
    assert "skipped 3 run(s): 1 × FAILED; 1 × INTERRUPTED; 1 × an evaluate run, not a training run" in printed
    rows = {(r["name"], r["env"]): r for r in csv.DictReader(open(out / "scores.csv"))}
    assert float(rows["qmix", "penalty"]["test_return_mean_mean"]) == 3.0
    assert float(rows["qmix", "penalty"]["test_return_mean_std"]) == pytest.approx(np.sqrt(14 / 3))
    assert rows["vdn", "climbing"]["runs"] == "1" and rows["vdn", "climbing"]["test_return_mean_std"] == ""
    assert (out / "scores.md").read_text().startswith("# Results: test_return_mean")


def test_iqm_and_mean_match_a_direct_computation(sacred, tmp_path):
    result = run_results(sacred, "--out", tmp_path / "out", "--no-plots")
    aggs = {a.label: a for a in result["aggregates"]}
    pooled = FINALS["qmix", "penalty"] + FINALS["qmix", "climbing"]
    qmix = aggs["qmix"]
    assert qmix.tasks == ["climbing", "penalty"] and qmix.runs == [4, 3]
    assert qmix.iqm == pytest.approx(scipy.stats.trim_mean(pooled, 0.25))
    assert qmix.mean == pytest.approx((np.mean(FINALS["qmix", "penalty"]) + np.mean(FINALS["qmix", "climbing"])) / 2)
    assert qmix.iqm_ci[0] <= qmix.iqm <= qmix.iqm_ci[1] and qmix.mean_ci[0] <= qmix.mean <= qmix.mean_ci[1]
    # equal runs per task: rliable's matrix form, the same IQM
    scores = [np.array([1.0, 2.0, 6.0, 7.0]), np.array([10.0, 20.0, 30.0, 40.0])]
    matrix = stats.aggregates([_gs("a", "x", scores[0]), _gs("a", "y", scores[1])], normalised=False, reps=REPS)[0]
    assert matrix.iqm == pytest.approx(scipy.stats.trim_mean(np.concatenate(scores), 0.25))
    # the same inputs give the same intervals (a seeded bootstrap)
    again = run_results(sacred, "--out", tmp_path / "again", "--no-plots")
    assert {a.label: a.iqm_ci for a in again["aggregates"]} == {a.label: a.iqm_ci for a in result["aggregates"]}
    assert "raw scores of envs on different scales" in result["markdown"]


def _gs(label, env, finals):
    from utils.runs import Group

    g = Group(label, env, "online", {})
    return stats.GroupScores(g, np.asarray(finals, float), np.zeros(len(finals)))


def test_normalise_min_max_and_dataset_references(sacred, tmp_path):
    result = run_results(sacred, "--out", tmp_path / "a", "--no-plots", "--normalise", "0,40")
    s = {(x.group.name, x.group.env): x for x in result["scores"]}
    assert s["qmix", "climbing"].normalised.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert "normalised (mean ± std)" in result["markdown"] and "min-max with low=0, high=40" in result["markdown"]
    # CODI: (R - R_low) / (R_high - R_low) with the mean returns of a folder's imbalanced_1e and expert_all datasets
    refs = tmp_path / "datasets"
    for env, low, high in (("penalty", 2.0, 6.0), ("climbing", 0.0, 50.0)):
        folder = refs / env / "qmix_seed1"
        folder.mkdir(parents=True)
        rows = [{"dataset": "expert_all", "return_mean": high}, {"dataset": "imbalanced_1e", "return_mean": low},
                {"dataset": "random", "return_mean": -1.0}]
        (folder / "returns.json").write_text(json.dumps({"datasets": rows}))
    summary = {env: json.loads((refs / env / "qmix_seed1" / "returns.json").read_text())
               for env in ("penalty", "climbing")}
    (refs / "reference_returns.json").write_text(json.dumps(summary))
    result = run_results(sacred, "--out", tmp_path / "b", "--no-plots", "--normalise", refs / "reference_returns.json")
    s = {(x.group.name, x.group.env): x for x in result["scores"]}
    assert s["qmix", "penalty"].normalised.tolist() == [-0.25, 0.0, 1.0]
    assert s["vdn", "climbing"].normalised.tolist() == [0.1]
    # one env's returns.json, other dataset names
    penalty = os.path.join(os.path.dirname(sacred), "sacred", "qmix", "penalty")
    result = run_results(penalty, "--out", tmp_path / "c", "--no-plots", "--normalise",
                         f"{refs / 'penalty' / 'qmix_seed1' / 'returns.json'}:random,expert_all")
    assert [x.normalised.tolist() for x in result["scores"]] == [[2 / 7, 3 / 7, 1.0]]
    with pytest.raises(SystemExit, match="no dataset 'medium'"):
        run_results(penalty, "--out", tmp_path / "d", "--normalise",
                    f"{refs / 'penalty' / 'qmix_seed1' / 'returns.json'}:medium,expert_all")


def test_plot_files_exist_and_are_not_empty(sacred, tmp_path):
    out = tmp_path / "out"
    write_run(sacred, "bc", "penalty", 50, [0, 10, 20], [0.0, 2.0, 4.0], run="offline")
    result = run_results(sacred, "--out", out, "--band", "ci")
    for stem in ("curves", "scores", "profile"):
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG" and (out / f"{stem}.png").stat().st_size > 5000
        assert (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF" and (out / f"{stem}.pdf").stat().st_size > 1000
    assert {os.path.basename(f) for f in result["files"]} >= {"scores.md", "scores.csv", "aggregate.csv",
                                                              "marl_eval.json", "curves.png", "profile.pdf"}
    assert "| bc | penalty | gradient steps | 1 (n=1) | 4.000 | – |" in result["markdown"]


def test_marl_eval_layout(sacred, tmp_path):
    out = tmp_path / "out"
    run_results(sacred, "--out", out, "--no-plots")
    data = json.load(open(out / "marl_eval.json"))
    assert list(data) == ["matrix_game"]  # env name: the env config; tasks: the env labels
    assert set(data["matrix_game"]) == {"penalty", "climbing"}
    qmix = data["matrix_game"]["climbing"]["qmix"]
    assert sorted(qmix) == ["run_0", "run_1", "run_2", "run_3"]
    assert qmix["run_0"]["step_0"] == {"step_count": 0, "return": [0.0]}
    assert qmix["run_0"]["step_2"] == {"step_count": 200, "return": [10.0]}
    assert sorted(v["absolute_metrics"]["return"][0] for v in qmix.values()) == [10.0, 20.0, 30.0, 40.0]
    assert set(data["matrix_game"]["penalty"]) == {"qmix", "vdn"}


def test_by_pools_and_splits_on_config_keys(tmp_path):
    root = str(tmp_path / "sacred")
    for i, (lr, mixer, final) in enumerate([(0.001, "qmix", 1.0), (0.001, "vdn", 3.0), (0.01, "qmix", 5.0)]):
        write_run(root, "q", "penalty", i + 1, [0, 1], [0.0, final], lr=lr, mixer=mixer)
    default = group_runs(find_runs(root, "test_return_mean")[0])
    assert [g.label for g in default] == ["q lr=0.001 mixer=qmix", "q lr=0.001 mixer=vdn", "q lr=0.01 mixer=qmix"]
    result = run_results(root, "--by", "alg,env,lr", "--out", tmp_path / "o", "--no-plots")
    assert [(s.group.label, s.n, s.finals.mean()) for s in result["scores"]] == [("q lr=0.001", 2, 2.0),
                                                                               ("q lr=0.01", 1, 5.0)]
    assert "pooled as seeds although these keys differ (not in --by): q lr=0.001 (penalty): mixer" in \
        result["markdown"]
    result = run_results(root, "--by", "mixer", "--out", tmp_path / "p", "--no-plots")
    assert [(s.group.label, s.n) for s in result["scores"]] == [("q mixer=qmix", 2), ("q mixer=vdn", 1)]


def test_runs_logged_at_different_steps_share_a_grid(tmp_path):
    root = str(tmp_path / "sacred")
    write_run(root, "qmix", "penalty", 1, [0, 100, 200, 300, 400], [0.0, 1.0, 2.0, 3.0, 4.0])
    write_run(root, "qmix", "penalty", 2, [0, 110, 220], [0.0, 3.0, 6.0])
    result = run_results(root, "--out", tmp_path / "o")
    [s] = result["scores"]
    assert s.finals.tolist() == [4.0, 6.0] and s.steps.tolist() == [400, 220]
    assert "| 220–400 |" in result["markdown"]


def test_sweep_folder_reads_its_manifest(sacred, tmp_path):
    sweep = tmp_path / "sweeps" / "demo"
    sweep.mkdir(parents=True)
    runs = sorted(os.path.join(sacred, "qmix", "penalty", d) for d in os.listdir(os.path.join(sacred, "qmix",
                                                                                               "penalty")))
    # src/sweeps/manifest.py's records: sacred_run (the run that counts) and sacred_runs (every attempt)
    trials = [{"id": f"t{i}", "status": "COMPLETED", "sacred_run": d, "sacred_runs": [d]} for i, d in enumerate(runs)]
    trials[0]["sacred_runs"] = [runs[1], runs[0]]  # an attempt that failed, then the one that counts
    trials.append({"id": "t9", "status": "PENDING", "sacred_run": None, "sacred_runs": []})
    trials.append({"id": "t10", "status": "COMPLETED", "sacred_run": str(tmp_path / "elsewhere" / "7")})
    (sweep / "manifest.json").write_text(json.dumps({"name": "demo", "trials": trials}))
    result = run_results(sweep, "--no-plots")
    assert [(s.group.label, s.n) for s in result["scores"]] == [("qmix", 3)]
    why = sorted(w for _, w in result["skipped"])
    assert len(why) == 5 and "no Sacred run in the manifest (trial PENDING)" in why
    assert any("does not exist" in w for w in why)
    assert os.path.isfile(sweep / "report" / "scores.md")  # a sweep's report lands in its folder


def test_mongo_runs_with_mongomock(tmp_path):
    import mongomock

    client = mongomock.MongoClient()
    db = client["pymarl"]
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for i, (final, status) in enumerate([(2.0, "COMPLETED"), (4.0, "COMPLETED"), (9.0, "FAILED")]):
        config = {**BASE, "name": "qmix", "seed": i, "env_args": {"game": "penalty", "seed": i}}
        db["runs"].insert_one({"_id": i + 1, "config": config, "status": status, "heartbeat": now,
                               "experiment": {"name": "pymarl"},
                               "info": {"test_return_mean": [0.0, final], "test_return_mean_T": [0, 100]}})
    # a run whose info lacks the metric: read from the metrics collection (log_scalar)
    config = {**BASE, "name": "qmix", "seed": 7, "env_args": {"game": "penalty", "seed": 7}}
    db["runs"].insert_one({"_id": 4, "config": config, "status": "RUNNING", "heartbeat": now, "info": {}})
    db["metrics"].insert_one({"run_id": 4, "name": "test_return_mean", "steps": [0, 100], "values": [0.0, 6.0]})
    result = run_results("--mongo-url", "mongodb://example:27017", "--out", tmp_path / "o", "--no-plots",
                         mongo_client_factory=lambda url: client)
    [s] = result["scores"]
    # the RUNNING run (its curve from the metrics collection) is counted and drawn, not scored: 6.0 is not final
    assert (s.group.name, s.group.env, s.n, s.group.n_running, len(s.group.runs)) == ("qmix", "penalty", 2, 1, 3)
    assert s.finals.tolist() == [2.0, 4.0]
    assert result["skipped"] == [("mongo://pymarl/3", "FAILED")]
    assert "| qmix | penalty | env steps | 2 (+1 running, not scored) | 3.000 ± 1.000 |" in result["markdown"]


def test_a_running_run_is_drawn_but_not_scored(tmp_path):
    """A run still RUNNING (or killed a moment ago, its heartbeat fresh) has no final score: its last evaluation is an
    intermediate one, which must not enter the mean, the CI, the normaliser, the aggregates or marl_eval.json. A
    group whose runs all run is named in the notes; the curves draw every run."""
    root = str(tmp_path / "sacred")
    for i, final in enumerate([0.4, 0.5]):
        write_run(root, "indd", "lbf", i + 1, [0, 100, 200], [0.0, 0.2, final])
    write_run(root, "indd", "lbf", 3, [0, 100], [0.0, 0.0], status="RUNNING")  # stopped halfway, an early score
    write_run(root, "bc", "lbf", 4, [0, 100], [0.0, 0.3], status="RUNNING")
    result = run_results(root, "--out", tmp_path / "o", "--normalise", "minmax")
    [s] = result["scores"]
    assert (s.group.name, s.n, s.group.n_running, s.finals.tolist()) == ("indd", 2, 1, [0.4, 0.5])
    assert s.steps.tolist() == [200, 200] and s.normalised.tolist() == pytest.approx([0.0, 1.0])  # minmax: 0.4, 0.5
    assert "| 2 (+1 running, not scored) | 0.450 ± 0.050 |" in result["markdown"]
    assert "still running, no final score yet (curves drawn): bc (lbf): 1" in result["markdown"]
    assert [a.label for a in result["aggregates"]] == ["indd"]
    csv_row = open(tmp_path / "o" / "scores.csv").read().splitlines()[1].split(",")
    assert csv_row[5:7] == ["2", "1"] and not csv_row[-1].endswith("/3")
    [tasks] = json.load(open(tmp_path / "o" / "marl_eval.json")).values()
    assert list(tasks["lbf"]) == ["indd"] and len(tasks["lbf"]["indd"]) == 2
    assert os.path.getsize(tmp_path / "o" / "curves.png") > 1000


def test_two_runs_of_one_seed_are_named_in_the_notes(tmp_path):
    """The same seed run twice (a rerun, or another run length: bookkeeping, so one group) counts as two runs; the
    notes say they are not independent seeds."""
    root = str(tmp_path / "sacred")
    write_run(root, "mappo", "lbf", 1, [0, 100], [0.0, 0.9])
    write_run(root, "mappo", "lbf", 2, [0, 100], [0.0, 0.8], seed=1, t_max=50)
    write_run(root, "mappo", "lbf", 3, [0, 100], [0.0, 0.7])
    result = run_results(root, "--out", tmp_path / "o", "--no-plots")
    assert [s.n for s in result["scores"]] == [3]
    assert ("runs with the same seed in one group (each counted as a run, not an independent seed): mappo (lbf): "
            "seed 1 × 2") in result["markdown"]


def test_no_runs_is_a_clear_error(tmp_path):
    write_run(str(tmp_path), "qmix", "climbing", 1, [0, 50], [1.0, 4.0], status="FAILED")
    with pytest.raises(SystemExit, match=r"no runs with 'test_return_mean'.*1 × FAILED"):
        run_results(tmp_path, "--out", tmp_path / "o")


@pytest.mark.parametrize("extra, message", [
    (["--by", "alg,lrr"], "--by lrr: no run's config has this key"),
    (["--ignore", "seedd"], "--ignore seedd: no run's config has this key"),
    (["--normalise", "0,nan"], "--normalise low,high: two different finite numbers, got 0,nan"),
    (["--study", "{spec}"], r"rows\[0\] must be an object with env and row"),
    (["--study", "{missing}"], "cannot read it"),
    (["--out", "{file}"], "is a file: give a folder"),
])
def test_option_mistakes_fail_before_any_report_is_written(sacred, tmp_path, extra, message):
    """A typo in --by / --ignore, a nonsense range, a bad study spec or an --out that is a file: one clear line, and no
    half-written report."""
    (tmp_path / "spec.json").write_text(json.dumps({"rows": [{"env": "climbing"}]}))
    (tmp_path / "a_file").write_text("")
    paths = {"{spec}": tmp_path / "spec.json", "{missing}": tmp_path / "nope.json", "{file}": tmp_path / "a_file"}
    extra = [str(paths.get(x, x)) for x in extra]
    out = ["--out", str(tmp_path / "out")] if "--out" not in extra else []
    with pytest.raises(SystemExit, match=message):
        run_results(sacred, *out, *extra)
    assert not (tmp_path / "out").exists()


def test_command_lines_run(sacred, tmp_path):
    """`python src/results.py`, `python scripts/plot.py` and the old `python src/plot.py` all still work."""
    res = subprocess.run([sys.executable, os.path.join(ROOT, "src", "results.py"), sacred, "--out",
                          str(tmp_path / "r"), "--reps", "100", "--by", "alg,env"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| qmix | penalty | env steps | 3 |" in res.stdout and os.path.getsize(tmp_path / "r" / "curves.pdf") > 0
    for tool in (os.path.join("scripts", "plot.py"), os.path.join("src", "plot.py")):
        out = tmp_path / f"{os.path.dirname(tool)}.png"
        res = subprocess.run([sys.executable, os.path.join(ROOT, tool), sacred, "--out", str(out)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and out.stat().st_size > 1000, res.stderr[-2000:]


def test_ci_columns_say_percentile_bootstrap_and_few_runs_get_the_undercoverage_note(sacred, tmp_path):
    result = run_results(sacred, "--out", tmp_path / "o", "--band", "ci")
    md = result["markdown"]
    assert "| 95% CI (percentile bootstrap) |" in md and "| 95% CI |" not in md
    assert "percentile-bootstrap 95% CIs of fewer than 10 runs (here n=2, 3, 4) undercover" in md
    assert "51% at n=2" in md
    assert stats.small_n_note([1, 10, 12]) == "" and "n=9" in stats.small_n_note([9, 1])
    from analysis.plots import band_text

    assert "undercover" in band_text("ci", [3]) and "undercover" not in band_text("ci", [10])


def test_runs_of_very_different_lengths_in_one_group_are_named(tmp_path):
    """t_max does not split groups (a resumed run may extend it): a 20k run pooled with 240k runs is said."""
    root = str(tmp_path / "sacred")
    write_run(root, "qmix", "lbf", 1, [0, 13626], [0.0, 0.2], t_max=20000)
    write_run(root, "qmix", "lbf", 2, [0, 239833], [0.0, 0.9], t_max=240000)
    write_run(root, "qmix", "lbf", 3, [0, 238000], [0.0, 0.8], t_max=240000)
    write_run(root, "vdn", "lbf", 4, [0, 230000], [0.0, 0.8])
    write_run(root, "vdn", "lbf", 5, [0, 239833], [0.0, 0.9])  # within 10%: not named
    md = run_results(root, "--out", tmp_path / "o", "--no-plots")["markdown"]
    assert "runs of different lengths pooled in one group" in md and "qmix (lbf): 13626–239833" in md
    assert "vdn (lbf)" not in md.split("runs of different lengths")[1].split("\n")[0]


def test_a_re_evaluated_final_takes_its_checkpoints_step_and_its_row_says_so(tmp_path):
    root = str(tmp_path / "sacred")
    a = write_run(root, "qmix", "lbf", 1, [0, 237500], [0.0, 0.2])
    write_run(root, "qmix", "lbf", 2, [0, 237500], [0.0, 0.4])
    write_run(root, "vdn", "lbf", 3, [0, 237500], [0.0, 0.4])
    finals = tmp_path / "reevaluate.json"
    finals.write_text(json.dumps([{"sacred_run": a, "mean": 0.5, "episodes": 256, "policy": "greedy",
                                   "step": 250000}]))
    result = run_results(root, "--out", tmp_path / "o", "--no-plots", "--finals", finals)
    qmix, vdn = result["scores"]
    assert qmix.steps.tolist() == [250000, 237500] and qmix.rescored == 1 and vdn.rescored == 0
    assert "| qmix | lbf | env steps | 2 (1 re-evaluated) | 0.450 ± 0.050 |" in result["markdown"]
    assert "| vdn | lbf | env steps | 1 (n=1) | 0.400 |" in result["markdown"]
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path / "o" / "scores.csv"))}
    assert (rows["qmix"]["rescored"], rows["qmix"]["step_max"], rows["vdn"]["rescored"]) == ("1", "250000", "0")


TINY = ["env_args.episode_limit=5", "test_nepisode=1", "test_interval=100", "log_interval=100",
        "runner_log_interval=100", "learner_log_interval=100", "save_model_interval=100", "batch_size=2",
        "buffer_size=4", "use_tensorboard=False"]


def real_resumed_run(tmp_path, *changes):
    """A real qmix run to 300 steps and its resume to 500 (with `changes`, e.g. lr=0.01): (sacred root, first run
    folder, resumed run folder)."""
    import glob

    from helpers import run_main

    results = str(tmp_path / "results")
    run_main(results, "qmix", "matrix_game", "t_max=300", *TINY)
    [model] = glob.glob(os.path.join(results, "models", "*"))
    run_main(results, "qmix", "matrix_game", "t_max=500", f"checkpoint_path={model}", *changes, *TINY)
    root = os.path.join(results, "sacred")
    first, second = sorted(glob.glob(os.path.join(root, "qmix", "*", "[0-9]*")))
    return root, first, second


def test_a_copied_resumed_run_is_one_run_read_from_the_copy(tmp_path):
    """Both segments of a resumed run copied elsewhere: the copy's earlier segment is chained (the one beside the
    resumed run, the same run as the recorded one), not the original outside the folder given; one run, not two."""
    import shutil

    root, first, second = real_resumed_run(tmp_path)
    copy = str(tmp_path / "copy" / "sacred")
    env = os.path.basename(os.path.dirname(first))
    for d in (first, second):
        shutil.copytree(d, os.path.join(copy, "qmix", env, os.path.basename(d)))
    result = run_results(copy, "--out", tmp_path / "o", "--no-plots")
    [s] = result["scores"]
    [run] = s.group.runs
    assert s.n == 1 and run.segments == (os.path.join(copy, "qmix", env, os.path.basename(first)),)
    assert str(tmp_path / "results") not in result["markdown"]


def test_an_algorithm_label_is_the_same_in_every_env(tmp_path):
    """The keys of a label are decided over every env of the name: qmix lr=0.01 on penalty (beside lr=0.0005) and
    qmix on climbing (all lr=0.01) are one algorithm; vdn lr=0.01 alone on penalty and vdn lr=0.0005 alone on
    climbing are two. The env's own keys (env_args.game) differ across envs without entering the labels."""
    root = str(tmp_path / "sacred")
    write_run(root, "qmix", "penalty", 1, [0, 100], [0.0, 1.0], lr=0.01)
    write_run(root, "qmix", "penalty", 2, [0, 100], [0.0, 2.0], lr=0.0005)
    write_run(root, "qmix", "climbing", 3, [0, 100], [0.0, 3.0], lr=0.01)
    write_run(root, "vdn", "penalty", 4, [0, 100], [0.0, 4.0], lr=0.01)
    write_run(root, "vdn", "climbing", 5, [0, 100], [0.0, 5.0], lr=0.0005)
    result = run_results(root, "--out", tmp_path / "o", "--no-plots")
    assert sorted((s.group.label, s.group.env) for s in result["scores"]) == [
        ("qmix lr=0.0005", "penalty"), ("qmix lr=0.01", "climbing"), ("qmix lr=0.01", "penalty"),
        ("vdn lr=0.0005", "climbing"), ("vdn lr=0.01", "penalty")]
    assert {a.label: a.tasks for a in result["aggregates"]} == {
        "qmix lr=0.0005": ["penalty"], "qmix lr=0.01": ["climbing", "penalty"], "vdn lr=0.0005": ["climbing"],
        "vdn lr=0.01": ["penalty"]}


def test_per_task_data_and_keys_older_runs_lack_do_not_split_an_algorithm_across_envs(tmp_path):
    """bc trains on each env's own dataset (offline_dataset differs across envs by design) and its climbing runs are
    older (no offline_valid_fraction key): one label, pooled over both envs. Two datasets within one env still split."""
    root = str(tmp_path / "sacred")
    offline = {"run": "offline", "offline_steps": 100}
    write_run(root, "bc", "climbing", 1, [0, 100], [0.0, 1.0], offline_dataset="data/climbing_expert.h5", **offline)
    write_run(root, "bc", "climbing", 2, [0, 100], [0.0, 2.0], offline_dataset="data/climbing_expert.h5", **offline)
    for i in (3, 4):
        write_run(root, "bc", "lbf", i, [0, 100], [0.0, float(i)], offline_dataset="data/lbf_8x8_expert.h5",
                  offline_valid_fraction=0.0, **offline)
    result = run_results(root, "--out", tmp_path / "o", "--no-plots")
    assert sorted((s.group.label, s.group.env, s.n) for s in result["scores"]) == [("bc", "climbing", 2),
                                                                                  ("bc", "lbf", 2)]
    assert {a.label: a.tasks for a in result["aggregates"]} == {"bc": ["climbing", "lbf"]}
    write_run(root, "bc", "lbf", 5, [0, 100], [0.0, 5.0], offline_dataset="data/lbf_8x8_medium.h5",
              offline_valid_fraction=0.0, **offline)
    result = run_results(root, "--out", tmp_path / "o2", "--no-plots")
    assert sorted((s.group.label, s.group.env) for s in result["scores"]) == [
        ("bc offline_dataset=climbing_expert.h5", "climbing"), ("bc offline_dataset=lbf_8x8_expert.h5", "lbf"),
        ("bc offline_dataset=lbf_8x8_medium.h5", "lbf")]


def test_a_resume_that_changed_a_setting_is_named_with_its_step(tmp_path):
    """A real run resumed with lr=0.01 (it trained with 0.0005) is grouped by lr=0.01, its whole curve included: the
    notes name the run, the key, both values and the checkpoint's step."""
    root, first, second = real_resumed_run(tmp_path, "lr=0.01")
    step = json.load(open(os.path.join(second, "info.json")))["resumed_from"]["step"]
    md = run_results(root, "--out", tmp_path / "o", "--no-plots")["markdown"]
    assert (f"resumed runs that changed settings, grouped by their latest settings (the curve before the change "
            f"included): {second}: lr 0.0005 -> 0.01 at step {step}") in md


def test_a_changed_setting_is_noted_only_where_the_earlier_segment_is_chained(tmp_path):
    """resumed_from.changed names a curve with points before the change: a branch (its own model folder) and a
    resume whose earlier folder is gone have none, so no note; a chained resume is noted."""
    root = str(tmp_path / "sacred")
    first = write_run(root, "qmix", "penalty", 1, [0, 100], [0.0, 1.0])

    def resumed(run_id, **resumed_from):
        d = write_run(root, "qmix", "penalty", run_id, [200, 300], [2.0, 3.0], lr=0.01)
        info = {"test_return_mean": [2.0, 3.0], "test_return_mean_T": [200, 300],
                "resumed_from": {"step": 100, "changed": {"lr": [0.0005, 0.01]}, **resumed_from}}
        json.dump(info, open(os.path.join(d, "info.json"), "w"))
        return d

    resumed(2, sacred_run={"dir": first, "id": 1}, same_model_dir=False)
    resumed(3, sacred_run={"dir": str(tmp_path / "gone" / "qmix" / "penalty" / "7"), "id": 7})
    runs, _ = find_runs(root, "test_return_mean")
    assert [(os.path.basename(r.path), r.segments, r.changed) for r in runs] == [
        ("1", (), ()), ("2", (), ()), ("3", (), ())]
    chained = resumed(4, sacred_run={"dir": first, "id": 1})
    runs, _ = find_runs(root, "test_return_mean")
    assert {os.path.basename(r.path): r.changed for r in runs} == {
        "2": (), "3": (), "4": ((100, {"lr": [0.0005, 0.01]}),)}  # run 1 is run 4's earlier segment
    assert [r.segments for r in runs if r.path == chained] == [(first,)]


def test_unreadable_config_or_info_is_a_skip_reason_that_names_the_file(tmp_path):
    """A truncated or missing config.json skips the run (it was read as {}: a bare label, and its keys missing split
    the other labels); a truncated info.json is named as such, not as 'no test_return_mean logged'."""
    root = str(tmp_path / "sacred")
    for i in (1, 2):
        write_run(root, "qmix", "penalty", i, [0, 100], [0.0, float(i)])
    truncated = write_run(root, "qmix", "penalty", 3, [0, 100], [0.0, 3.0])
    with open(os.path.join(truncated, "config.json"), "w") as f:
        f.write('{"name": "qmix", "lr')
    os.remove(os.path.join(write_run(root, "qmix", "penalty", 4, [0, 100], [0.0, 4.0]), "config.json"))
    broken_info = write_run(root, "qmix", "penalty", 5, [0, 100], [0.0, 5.0])
    with open(os.path.join(broken_info, "info.json"), "w") as f:
        f.write('{"test_return_mean": [0.0, 5')
    result = run_results(root, "--out", tmp_path / "o", "--no-plots")
    assert [(s.group.label, s.n) for s in result["scores"]] == [("qmix", 2)]
    why = {os.path.basename(p): w for p, w in result["skipped"]}
    assert why["3"].startswith("config.json unreadable: Unterminated string")
    assert why["4"] == "config.json missing"
    assert why["5"].startswith("info.json unreadable: Expecting")


def test_a_run_whose_final_value_is_nan_is_named_and_left_out(tmp_path, capsys):
    """A finished run whose last evaluation is NaN or inf (a diverged run) made every statistic of its group nan ±
    nan: it is skipped, counted in its group's row and named in the notes; a NaN inside a curve is null in
    marl_eval.json, which stays strict JSON."""
    from plot import main as plot_main

    root = str(tmp_path / "sacred")
    write_run(root, "qmix", "penalty", 1, [0, 100, 200], [0.0, float("nan"), 2.0])
    write_run(root, "qmix", "penalty", 2, [0, 100, 200], [0.0, 1.0, 4.0])
    diverged = write_run(root, "qmix", "penalty", 3, [0, 100, 200], [0.0, 1.0, float("nan")])
    write_run(root, "qmix", "penalty", 4, [0, 100, 200], [0.0, 1.0, float("inf")])
    out = tmp_path / "o"
    md = run_results(root, "--out", out, "--no-plots")["markdown"]
    row = "| qmix | penalty | env steps | 2 (+2 non-finite, not scored) | 3.000 ± 1.000 |"
    assert row in md and "nan" not in md.split("## Notes")[0]
    assert [(r["runs"], r["non_finite"]) for r in csv.DictReader(open(out / "scores.csv"))] == [("2", "2")]
    plot_main([root, "--out", str(tmp_path / "plot" / "")])
    assert f"{row[:-2]} (n=2) |" in capsys.readouterr().out
    assert f"runs whose final test_return_mean is NaN or inf, left out of the scores and curves: {diverged}" in md
    text = (out / "marl_eval.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in marl_eval.json"))
    assert sorted(r["step_1"]["return"][0] is None for r in data["matrix_game"]["penalty"]["qmix"].values()) == [
        False, True]


def test_a_diverged_run_of_another_setting_is_not_counted_in_a_group_it_only_resembles(tmp_path):
    """A non-finite run takes no part in choosing the label keys: one with lr=0.5 beside two finished runs at lr=0.0005
    matched their (bare) label and was counted as one of their seeds. It is a setting of its own, named in the notes."""
    root = str(tmp_path / "sacred")
    write_run(root, "qmix", "penalty", 1, [0, 100, 200], [0.0, 1.0, 2.0], lr=0.0005)
    write_run(root, "qmix", "penalty", 2, [0, 100, 200], [0.0, 1.0, 4.0], lr=0.0005)
    diverged = write_run(root, "qmix", "penalty", 3, [0, 100, 200], [0.0, 1.0, float("nan")], lr=0.5)
    write_run(root, "qmix", "penalty", 4, [0, 100, 200], [0.0, 1.0, float("nan")], lr=0.0005)
    md = run_results(root, "--out", tmp_path / "o", "--no-plots")["markdown"]
    assert "| qmix | penalty | env steps | 2 (+1 non-finite, not scored) | 3.000 ± 1.000 |" in md
    assert diverged in md.split("## Notes")[1]


def test_marl_eval_writes_a_non_finite_final_as_null_and_never_a_cut_file(tmp_path, monkeypatch):
    """A final score that is NaN (a re-evaluation, final_override) is null in absolute_metrics (json.dump with
    allow_nan=False raised midway, leaving a truncated file); a value that cannot be written leaves the old file."""
    from analysis import marl_eval
    from utils.runs import Group, Run

    run = Run("r/1", "qmix", "penalty", "online", {"env": "matrix_game"}, False, np.array([0.0, 100.0]),
              np.array([0.0, 1.0]), final_override=float("nan"))
    groups = [Group("qmix", "penalty", "online", {}, [run])]
    path = tmp_path / "marl_eval.json"
    marl_eval.write_marl_eval(str(path), groups, "test_return_mean")
    record = json.loads(path.read_text())["matrix_game"]["penalty"]["qmix"]["run_0"]
    assert record["absolute_metrics"] == {"return": [None]} and record["step_1"]["return"] == [1.0]
    before = path.read_text()
    monkeypatch.setattr(marl_eval, "finite_or_none", float)  # a NaN that slips through
    with pytest.raises(ValueError):
        marl_eval.write_marl_eval(str(path), groups, "test_return_mean")
    assert path.read_text() == before and os.listdir(tmp_path) == ["marl_eval.json"]


def test_the_results_folder_for_its_sacred_folder_and_a_misspelled_metric_get_hints(tmp_path):
    """`results.py results` (not results/sacred) read model checkpoint folders as runs ('N × no run.json status'):
    it names the Sacred folder instead. A misspelled --metric names the closest logged metrics."""
    from helpers import run_main
    from plot import main as plot_main

    results = str(tmp_path / "results")
    run_main(results, "qmix", "matrix_game", "t_max=300", "save_model=True", *TINY)
    sacred = os.path.join(results, "sacred")
    for tool in (run_results, plot_main):
        with pytest.raises(SystemExit, match=f"^{results}: no Sacred runs in it; did you mean {sacred}\\?$"):
            tool([results, "--out", str(tmp_path / "o")] if tool is plot_main else results)
        with pytest.raises(SystemExit, match=r"no runs with 'test_return_maen'.*; did you mean test_return_mean, "):
            tool([sacred, "--metric", "test_return_maen"]) if tool is plot_main else tool(
                sacred, "--metric", "test_return_maen", "--out", tmp_path / "o")
    assert not find_runs(results, "test_return_mean")[1]  # no checkpoint folder taken for a run


def test_a_truncated_sweep_manifest_is_a_clear_error(tmp_path):
    """A cut manifest.json gave results.py and plot.py a raw JSONDecodeError traceback."""
    from plot import main as plot_main

    sweep = tmp_path / "sweeps" / "demo"
    sweep.mkdir(parents=True)
    (sweep / "manifest.json").write_text('{"name": "demo", "trials": [{"id": "t0", "sta')
    message = f"^{sweep / 'manifest.json'}: not a readable sweep manifest \\(Unterminated string.*\\); restore it"
    with pytest.raises(SystemExit, match=message):
        run_results(sweep, "--no-plots")
    with pytest.raises(SystemExit, match=message):
        plot_main([str(sweep), "--out", str(tmp_path / "p.png")])
