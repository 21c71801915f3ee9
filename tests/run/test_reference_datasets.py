"""The reference-datasets recipe end to end on the climbing game (tiny training, few episodes), and its resume."""
import glob
import json
import os

from offline import OfflineDataset
from reference_datasets import main

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
