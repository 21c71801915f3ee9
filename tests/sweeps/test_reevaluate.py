"""scripts/reevaluate.py: a finished trial's final model evaluated again on more episodes, from the sweep's manifest,
with its Sacred runs kept apart from the sweep's."""
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


def load_script():
    spec = importlib.util.spec_from_file_location("reevaluate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reevaluate_runs_each_finished_trial_again_on_more_episodes(tmp_path):
    results = tmp_path / "results"
    run_main(results, "iql", "climbing", *TINY)
    (model_dir,) = glob.glob(str(results / "models" / "*"))
    overrides = {"local_results_path": str(results), **parse_updates(TINY)}  # typed, as a manifest holds them
    sweep = tmp_path / "sweeps" / "tiny"
    os.makedirs(sweep)
    trials = [{"id": "iql-s3", "alg": "iql", "env": "climbing", "overrides": overrides, "seed": 3,
               "resources": {"cpu": 1, "gpu": 0}, "status": "COMPLETED", "model_dir": model_dir, "t_env": 225},
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
    # a final checkpoint that has gone is named, not replaced by an earlier one
    shutil.rmtree(os.path.join(model_dir, "225"))
    with pytest.raises(RuntimeError, match=r"loaded the checkpoint of step 125, but the trial ended at 225"):
        load_script().main([str(sweep), "--episodes", "5", "--out", str(tmp_path / "out2")])


def test_reevaluate_refuses_a_folder_without_a_manifest(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_script().main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert "holds no readable manifest.json" in capsys.readouterr().err
