"""The reference-datasets recipe end to end on the climbing game (tiny training, few episodes), and its resume."""
import glob
import json
import os

import pytest

from offline import OfflineDataset
from reference_datasets import finished_run, main

DATASETS = {"expert", "medium", "poor", "random", "mix_200e_1000p", "imbalanced_1e", "expert_2", "expert_all"}


def test_recipe_trains_collects_and_resumes(tmp_path):
    args = ["--envs", "climbing", "--t-max", "3000", "--episodes", "10", "--results", str(tmp_path)]
    main(args)
    table = json.load(open(tmp_path / "datasets" / "reference_returns.json"))
    rows = {r["dataset"]: r for r in table["climbing"]["datasets"]}
    assert set(rows) == DATASETS
    assert rows["mix_200e_1000p"]["episodes"] == 12 and rows["expert"]["episodes"] == 10  # 2 + 10, scaled
    assert rows["expert"]["return_mean"] > rows["random"]["return_mean"]
    mix = OfflineDataset.load(tmp_path / "datasets" / "climbing" / "mix_200e_1000p.h5")
    assert sorted(set(map(tuple, mix.qualities))) == [("expert", "expert"), ("poor", "poor")]
    imbalanced = OfflineDataset.load(tmp_path / "datasets" / "climbing" / "imbalanced_1e.h5")
    assert ((imbalanced.qualities == "expert").sum(1) == 1).all()
    assert "| climbing | expert_all |" in open(tmp_path / "datasets" / "reference_returns.md").read()

    runs = glob.glob(os.path.join(tmp_path, "reference", "climbing", "models", "*"))
    stamps = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(tmp_path, "datasets", "climbing", "*.h5"))}
    main(args)  # everything is complete: no new training run, no dataset rewritten
    assert glob.glob(os.path.join(tmp_path, "reference", "climbing", "models", "*")) == runs
    assert {p: os.path.getmtime(p) for p in stamps} == stamps


def test_a_run_saved_at_another_interval_is_not_the_recipes(tmp_path, capsys):
    """A finished behaviour run whose checkpoints are sparser (or denser) than the recipe's is passed over, named:
    the qualities come from its checkpoints (MPE spread's 100k interval gave poor = medium)."""
    from utils.checkpoint import save_run_config
    run = tmp_path / "models" / "run"
    for step in (0, 100, 200):
        (run / str(step)).mkdir(parents=True)
    save_run_config(str(run), {"save_model_interval": 100, "t_max": 200})
    assert finished_run(str(tmp_path / "models"), 200, 100) == str(run)
    assert finished_run(str(tmp_path / "models"), 200) == str(run)
    assert finished_run(str(tmp_path / "models"), 200, 10) is None
    assert "it saved checkpoints every 100 steps, the recipe every 10" in capsys.readouterr().out


def test_option_mistakes_are_refused_before_training(tmp_path, monkeypatch, capsys):
    """--datasets outside the recipe and --episodes < 1 are argparse errors (nothing trained); a relative --results
    is made absolute against the caller's folder (the commands run from the repository root)."""
    import reference_datasets as script
    calls = []
    monkeypatch.setattr(script, "reference_datasets", lambda *a, **k: calls.append(a) or ("x", {"datasets": []}))
    monkeypatch.setattr(script, "write_summary", lambda *a: None)
    for argv, match in ((["--datasets", "expret"], "invalid choice: 'expret'"), (["--episodes", "0"], "must be >= 1"),
                        (["--episodes", "2.5"], "expected a whole number")):
        with pytest.raises(SystemExit) as e:
            script.main(["--envs", "climbing", *argv])
        assert e.value.code == 2 and match in capsys.readouterr().err
    assert not calls
    monkeypatch.chdir(tmp_path)
    script.main(["--envs", "climbing", "--results", "res"])
    assert calls[0][2] == str(tmp_path / "res")
