"""Dataset files as a user finds them (issue 12, item 6): created with the user's umask (datasets and the JSON and
markdown outputs beside them), and fingerprinted where an offline run records what it trained on."""
import json
import os
import stat

import pytest

from helpers import run_main, sacred_dir, write_random_dataset
from offline.reader import dataset_fingerprint
from utils.files import sha256_file, write_json_atomic, write_text_atomic


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Sets a umask for the test and restores the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o002, 0o022, 0o077])
def test_outputs_get_the_users_umask(tmp_path, umask, mask):
    umask(mask)
    write_random_dataset(tmp_path / "d.h5", n_episodes=1)
    write_json_atomic(tmp_path / "returns.json", {"a": 1})
    write_text_atomic(tmp_path / "returns.md", "| a |\n")
    for name in ("d.h5", "returns.json", "returns.md"):
        assert mode(tmp_path / name) == 0o666 & ~mask, name


def test_fingerprint_names_the_file_and_its_bytes(tmp_path):
    path, _ = write_random_dataset(tmp_path / "d.h5", n_episodes=3)
    fp = dataset_fingerprint(path)
    assert fp["path"] == str(path) and fp["sha256"] == sha256_file(path) and fp["episodes"] == 3
    assert fp["bytes"] == os.path.getsize(path) and fp["created"]


def test_offline_run_records_its_datasets_fingerprints(tmp_path):
    path, _ = write_random_dataset(tmp_path / "d.h5", n_episodes=4, env_args={"episode_limit": 5})
    run_main(tmp_path, "bc", "climbing", "offline_steps=2", "offline_test_interval=2", "offline_log_interval=2",
             "save_model=False", "batch_size=2", "test_nepisode=1", "env_args.episode_limit=5",
             "use_tensorboard=False", f"offline_dataset={path}")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "bc", "climbing"), "info.json")))
    assert info["dataset"]["paths"] == [str(path)]
    [fp] = info["dataset"]["fingerprints"]
    assert fp["path"] == str(path) and fp["sha256"] == sha256_file(path) and fp["episodes"] == 4
