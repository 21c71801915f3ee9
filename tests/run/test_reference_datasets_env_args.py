"""scripts/reference_datasets.py --env-arg and --datasets (bench/codi_table.py's per-N datasets): the env args reach
training and collection, the behaviour run gets a folder of its own, and only the named datasets are collected."""
import json
import os

from offline import OfflineDataset
from reference_datasets import main


def test_env_args_and_a_subset_of_the_datasets(tmp_path):
    main(["--envs", "climbing", "--env-arg", "episode_limit=10", "--datasets", "imbalanced_1e", "expert_all",
          "--t-max", "3000", "--episodes", "6", "--results", str(tmp_path)])
    assert os.listdir(tmp_path / "reference") == ["climbing-climbing"]  # not the plain recipe's reference/climbing
    config = json.load(open(next((tmp_path / "reference" / "climbing-climbing" / "models").iterdir()) / "config.json"))
    assert config["env_args"]["episode_limit"] == 10
    table = json.load(open(tmp_path / "datasets" / "reference_returns.json"))["climbing"]
    assert [r["dataset"] for r in table["datasets"]] == ["imbalanced_1e", "expert_all"]
    data = OfflineDataset.load(tmp_path / "datasets" / "climbing" / "imbalanced_1e.h5")
    assert json.loads(data.attrs["env_args"])["episode_limit"] == 10 and len(data) == 6
    assert data.arrays()["obs"].shape[1] == 11
