"""scripts/reevaluate.py (sweeps/reevaluate.py): a finished trial's final model evaluated again on more episodes, from
the sweep's manifest, with its Sacred runs kept apart from the sweep's; src/results.py --finals and the bench tables'
--reevaluate score runs by those numbers."""
import glob
import importlib.util
import json
import os
import shutil

import pytest

from helpers import run_main
from utils.cli import parse_updates

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "reevaluate.py")
TINY = ["t_max=200", "test_interval=100", "test_nepisode=2", "log_interval=100", "runner_log_interval=100",
        "learner_log_interval=100", "batch_size=4", "buffer_size=8", "use_tensorboard=False", "save_model=True",
        "save_model_interval=100"]


def load_script(path=SCRIPT):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reevaluate_runs_each_finished_trial_again_on_more_episodes(tmp_path, capsys):
    results = tmp_path / "results"
    run_main(results, "iql", "climbing", *TINY)
    (model_dir,) = glob.glob(str(results / "models" / "*"))
    (sacred_run,) = [os.path.dirname(p) for p in glob.glob(str(results / "sacred" / "**" / "run.json"),
                                                             recursive=True)]
    overrides = {"local_results_path": str(results), **parse_updates(TINY)}  # typed, as a manifest holds them
    sweep = tmp_path / "sweeps" / "tiny"
    os.makedirs(sweep)
    trials = [{"id": "iql-s3", "alg": "iql", "env": "climbing", "overrides": overrides, "seed": 3,
               "resources": {"cpu": 1, "gpu": 0}, "status": "COMPLETED", "model_dir": model_dir, "t_env": 225,
               "sacred_run": sacred_run},
              {"id": "iql-s4", "alg": "iql", "env": "climbing", "overrides": overrides, "seed": 4,
               "resources": {"cpu": 1, "gpu": 0}, "status": "ERROR", "model_dir": None}]
    json.dump({"name": "tiny", "trials": trials}, open(sweep / "manifest.json", "w"))
    sacred_before = sorted(glob.glob(str(results / "sacred" / "**" / "run.json"), recursive=True))
    out = tmp_path / "out"
    assert load_script().main([str(sweep), "--episodes", "5", "--out", str(out)]) == 0
    (row,) = json.load(open(out / "reevaluate.json"))  # the ERROR trial is skipped
    # iql tests epsilon-greedily with evaluation_epsilon 0: "greedy"; the last checkpoint (225, not 125) was loaded
    assert row["trial"] == "iql-s3" and row["episodes"] == 5 and row["policy"] == "greedy" and row["step"] == 225
    assert row["se"] == pytest.approx(row["std"] / 5 ** 0.5)
    assert "| tiny | iql-s3 | 3 | 225 | 5 | greedy |" in (out / "reevaluate.md").read_text()
    # the evaluation's Sacred run is in the scratch folder, and its own numbers are the row's; the sweep's results
    # are as they were
    assert sorted(glob.glob(str(results / "sacred" / "**" / "run.json"), recursive=True)) == sacred_before
    (run,) = glob.glob(str(out / "results" / "sacred" / "**" / "config.json"), recursive=True)
    config = json.load(open(run))
    assert config["evaluate"] is True and config["test_nepisode"] == 5 and config["checkpoint_path"] == model_dir
    metrics = json.load(open(os.path.join(os.path.dirname(run), "metrics.json")))
    assert metrics["test_return_mean"]["values"][-1] == pytest.approx(row["mean"], abs=1e-3)
    # every test stat of the evaluation's final line is kept (an env's own, such as SMAX's win rate, too)
    assert set(row["metrics"]) >= {"test_return_mean", "test_return_std", "test_ep_length_mean"}
    assert row["metrics"]["test_return_mean"] == row["mean"]
    assert row["metrics"]["test_ep_length_mean"] == pytest.approx(metrics["test_ep_length_mean"]["values"][-1],
                                                                  abs=1e-3)
    assert row["sacred_run"] == sacred_run and row["requested"] == 5 and row["sampled"] is False
    # asked again for the same: the row is kept, nothing runs; src/results.py --finals scores the run by it
    assert load_script().main([str(sweep), "--episodes", "5", "--out", str(out)]) == 0
    assert json.load(open(out / "reevaluate.json")) == [row]
    assert len(glob.glob(str(out / "results" / "sacred" / "**" / "config.json"), recursive=True)) == 1
    import results as results_cli

    plain = results_cli.report(results_cli.parse_args([str(sweep), "--out", str(tmp_path / "r0"), "--no-plots"]))
    scored = results_cli.report(results_cli.parse_args([str(sweep), "--out", str(tmp_path / "r1"), "--no-plots",
                                                        "--finals", str(out / "reevaluate.json")]))
    (run,) = scored["groups"][0].runs
    assert plain["scores"][0].finals.tolist() == [run.values[-1]]  # without --finals: the run's last evaluation
    assert scored["scores"][0].finals.tolist() == [row["mean"]] and run.final == row["mean"]
    assert "final scores of 1 of 1 runs: their final models evaluated again on 5 greedy episodes" in \
        scored["markdown"]
    # the bench tables' --reevaluate: the same rows (kept), the cell's number is the re-evaluation
    misodice_table = load_script(os.path.join(os.path.dirname(SCRIPT), "..", "bench", "misodice_table.py"))
    finals = misodice_table.reevaluated([str(sweep)], 5, str(out), jobs=2)
    scores, _ = misodice_table.results_call([str(sweep)], str(tmp_path / "r2"), by=None, finals=finals)
    assert [misodice_table.cell(gs)["mean"] for gs in scores.values()] == [row["mean"]]
    assert misodice_table.reevaluated([str(sweep)], 0, str(out), jobs=2) is None  # --reevaluate 0: off
    assert scored["rescored"] == 1 and plain["rescored"] == 0
    assert misodice_table.final_words({"episodes": 5, "rescored": 1, "runs": 1}).startswith(
        "each run's final model evaluated again on 5 greedy episodes")
    assert misodice_table.final_words({"episodes": 5, "rescored": 1, "runs": 3}).startswith(
        "1 of 3 runs' final models evaluated again")  # never claimed for runs it did not re-score
    assert misodice_table.final_words(None) == "each run's last evaluation"
    # another sweep's call into the same folder keeps this sweep's row
    other = tmp_path / "sweeps" / "other"
    os.makedirs(other)
    json.dump({"name": "other", "trials": [{**trials[1], "id": "x"}]}, open(other / "manifest.json", "w"))
    assert load_script().main([str(other), "--episodes", "5", "--out", str(out)]) == 1  # nothing of its own to do:
    assert json.load(open(out / "reevaluate.json")) == [row]                            # an error, the file kept
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit):  # --out naming a file: refused before any evaluation
        load_script().main([str(sweep), "--episodes", "5", "--out", str(tmp_path / "a_file")])
    # rows that do not name their runs (an older reevaluate.json) are refused with what to do
    (tmp_path / "old.json").write_text(json.dumps([{k: v for k, v in row.items() if k != "sacred_run"}]))
    with pytest.raises(SystemExit, match="run scripts/reevaluate.py again"):
        results_cli.report(results_cli.parse_args([str(sweep), "--finals", str(tmp_path / "old.json"),
                                                   "--out", str(tmp_path / "r3"), "--no-plots"]))
    # another test stat of the rows scores the runs by --metric; one they lack is refused, naming those they hold
    lengths = results_cli.report(results_cli.parse_args([str(sweep), "--finals", str(out / "reevaluate.json"),
                                                         "--metric", "test_ep_length_mean", "--out",
                                                         str(tmp_path / "r4"), "--no-plots"]))
    assert lengths["scores"][0].finals.tolist() == [row["metrics"]["test_ep_length_mean"]]
    with pytest.raises(SystemExit, match="re-evaluations of test_ep_length_mean, .*not of return_mean"):
        results_cli.report(results_cli.parse_args([str(sweep), "--finals", str(out / "reevaluate.json"),
                                                   "--metric", "return_mean", "--out", str(tmp_path / "r5")]))
    # a row written before the stats were kept is evaluated again, and gains them
    json.dump([{k: v for k, v in row.items() if k != "metrics"}], open(out / "reevaluate.json", "w"))
    assert load_script().main([str(sweep), "--episodes", "5", "--out", str(out)]) == 0
    assert json.load(open(out / "reevaluate.json")) == [row]
    # a final checkpoint that has gone is named, not replaced by an earlier one
    shutil.rmtree(os.path.join(model_dir, "225"))
    capsys.readouterr()
    assert load_script().main([str(sweep), "--episodes", "5", "--out", str(tmp_path / "out2")]) == 1
    assert "loaded the checkpoint of step 125, but the trial ended at 225" in capsys.readouterr().err
    assert json.load(open(tmp_path / "out2" / "reevaluate.json")) == []  # no row for it


def test_reevaluate_refuses_a_folder_without_a_manifest(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_script().main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert "holds no readable manifest.json" in capsys.readouterr().err


def test_a_sweep_still_running_offers_its_completed_trials(tmp_path):
    """The driver writes a trial's model folder into the manifest when the sweep ends; until then a COMPLETED record
    has only its status, and the folder is found as the driver would find it (sweeps.manifest.model_dir)."""
    from sweeps.reevaluate import finished_trials

    results = tmp_path / "results"
    folder = results / "models" / "misodice_seed0_spread_N3_2026-12-05_18-17-23"
    os.makedirs(folder / "7000")
    (folder / "7000" / "agent.th").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"label": "sweep:diag:abc:misodice-s0"}))
    record = {"id": "misodice-s0", "name": "misodice", "seed": 0, "env_label": "spread_N3", "results": str(results),
              "label": "sweep:diag:abc:misodice-s0", "status": "COMPLETED", "model_dir": None,
              "sacred_run": "results/sacred/misodice/spread_N3/7"}
    running = {**record, "id": "other-s1", "status": "RUNNING"}
    sweep = tmp_path / "sweeps" / "diag"
    os.makedirs(sweep)
    json.dump({"name": "diag", "status": "RUNNING", "trials": [record, running]}, open(sweep / "manifest.json", "w"))
    name, done, skipped = finished_trials(str(sweep))
    assert (name, skipped) == ("diag", 1) and [t["model_dir"] for t in done] == [str(folder)]


def test_a_trial_whose_run_played_no_test_episodes_is_skipped(tmp_path):
    """MARL-SL step 1 trains a reward model, not a policy (trains_actor False): its run logs no test_return_mean,
    and one from before that (which logged the untrained actor's tests) is known by its learner; evaluate=True would
    refuse both. A trial whose info.json is unreadable is kept."""
    from sweeps.reevaluate import finished_trials

    trials = []
    runs = [({"test_return_mean": [1.0]}, "ppo_learner"), ({"loss": [0.1]}, None), (None, None),
            ({"test_return_mean": [0.0]}, "marl_sl_learner")]
    for k, (info, learner) in enumerate(runs):
        run, model = tmp_path / "sacred" / str(k), tmp_path / "models" / str(k)
        os.makedirs(run)
        os.makedirs(model)
        if info is not None:
            (run / "info.json").write_text(json.dumps(info))
        if learner is not None:
            (run / "config.json").write_text(json.dumps({"learner": learner}))
        trials.append({"id": f"t{k}", "status": "COMPLETED", "model_dir": str(model), "sacred_run": str(run)})
    sweep = tmp_path / "sweeps" / "mixed"
    os.makedirs(sweep)
    json.dump({"name": "mixed", "status": "COMPLETED", "trials": trials}, open(sweep / "manifest.json", "w"))
    name, done, skipped = finished_trials(str(sweep))
    assert [t["id"] for t in done] == ["t0", "t2"] and skipped == 2


def test_finals_of_another_metric_leave_runs_whose_row_lacks_it_at_their_last_evaluation(tmp_path):
    from types import SimpleNamespace as SN

    from analysis.sources import apply_finals

    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    rows = [{"sacred_run": new, "mean": 1.5, "episodes": 256, "policy": "greedy",
             "metrics": {"test_return_mean": 1.5, "test_battle_won_mean": 0.75}},
            {"sacred_run": old, "mean": 2.0, "episodes": 256, "policy": "greedy"}]  # written before `metrics`
    path = tmp_path / "reevaluate.json"
    path.write_text(json.dumps(rows))

    def runs():
        return [SN(path=new, final_override=None), SN(path=old, final_override=None)]

    wins = runs()
    note, rescored = apply_finals(wins, [str(path)], "test_battle_won_mean")
    assert rescored == 1 and [r.final_override for r in wins] == [0.75, None]
    assert "final scores of 1 of 2 runs" in note and "the other 1: their last evaluation" in note
    returns = runs()
    assert apply_finals(returns, [str(path)], "test_return_mean")[1] == 2
    assert [r.final_override for r in returns] == [1.5, 2.0]
    path.write_text("[]")
    with pytest.raises(SystemExit, match="holds no re-evaluations, not of test_battle_won_mean"):
        apply_finals(runs(), [str(path)], "test_battle_won_mean")


def test_finals_that_match_none_of_the_runs_are_refused(tmp_path):
    """A reevaluate.json of another sweep once left every table at the last evaluations with only a note."""
    from types import SimpleNamespace as SN

    from analysis.sources import apply_finals

    path = tmp_path / "reevaluate.json"
    path.write_text(json.dumps([{"sacred_run": str(tmp_path / "elsewhere"), "mean": 1.0, "episodes": 256,
                                 "policy": "greedy"}]))
    with pytest.raises(SystemExit, match="re-evaluated none of the 2 runs read .*elsewhere"):
        apply_finals([SN(path=str(tmp_path / "a"), final_override=None),
                      SN(path=str(tmp_path / "b"), final_override=None)], [str(path)], "test_return_mean")
