"""Issue 12: TFCAF records are per file, and a QLLM run records which function it trained with.

Two hand-written TFCAFs validated one after the other in the same folder keep their own records
(`<name>.meta.json`) and both train without being validated again; each run's info.json, log and the config saved
beside its checkpoints name the function (repository-relative path where possible), its SHA-256, the effective IGM
gate and why it was trusted. An old generation folder (tfcaf.py + meta.json) still trains.
"""
import glob
import json
import os

import pytest

from helpers import install_record_v1, run_main, sacred_dir
from qllm import records
from utils.files import sha256_file
from utils.paths import REPO_ROOT

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "record_v1")
MINE = ("import torch\n\ndef tfcaf(state, n_agents):\n"
        "    w = torch.softmax(state[:, :n_agents], dim=-1) * n_agents\n"
        "    return w, 0.1 * state.sum(-1, keepdim=True)\n")
OTHER = ("import torch\n\ndef tfcaf(state, n_agents):\n"
         "    w = torch.ones(state.shape[0], n_agents, dtype=state.dtype, device=state.device)\n"
         "    return w, state[:, :1] * 0.0\n")
TINY = ["t_max=40", "test_interval=20", "test_nepisode=2", "log_interval=20", "runner_log_interval=20",
        "learner_log_interval=20", "batch_size=2", "buffer_size=4", "env_args.episode_limit=5",
        "epsilon_anneal_time=20", "use_tensorboard=False", "save_model=True", "save_model_interval=20"]


def trained_with(tmp_path, label):
    """(info.json's "tfcaf", the model folder's config.json) of the one run under tmp_path."""
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "qllm", label), "info.json")))
    (config_file,) = glob.glob(os.path.join(tmp_path, "models", "*", "config.json"))
    return info["tfcaf"], json.load(open(config_file))


def test_two_tfcafs_validated_in_one_folder_both_train_and_the_runs_record_them(tmp_path, capsys):
    from qllm_validate import main as validate  # scripts/qllm_validate.py

    folder = tmp_path / "mine"
    folder.mkdir()
    paths = {}
    for name, source in (("my_tfcaf.py", MINE), ("other.py", OTHER)):
        paths[name] = folder / name
        paths[name].write_text(source)
        assert validate([str(paths[name]), "--env-config", "climbing", "--states", "32", "--write-meta"]) == 0
    assert sorted(os.listdir(folder)) == ["my_tfcaf.meta.json", "my_tfcaf.py", "other.meta.json", "other.py"]
    for name, path in paths.items():
        out = tmp_path / name
        capsys.readouterr()
        run_main(out, "qllm", "climbing", f"tfcaf_path={path}", *TINY)
        log = capsys.readouterr().err
        tfcaf, config = trained_with(out, "climbing")
        digest = sha256_file(path)
        assert tfcaf["path"] == str(path) and tfcaf["sha256"] == digest  # outside the repository: absolute
        assert tfcaf["trust"] == "signed record" and tfcaf["igm_gate"] is True  # never validated again
        assert tfcaf["igm_gate_from"] == "the function's record"
        assert config["tfcaf_path"] == str(path) and config["igm_gate"] is True  # resolved, not null
        assert f"QLLM trains with the TFCAF {path} (sha256 {digest}" in log
        assert "its validation record, signed by this installation" in log and "validating it again" not in log


def test_a_run_with_the_shipped_reference_records_its_repository_relative_path(tmp_path):
    run_main(tmp_path, "qllm", "climbing", *TINY)  # tfcaf_path null, igm_gate null
    tfcaf, config = trained_with(tmp_path, "climbing")
    path, entry = records.shipped_reference("climbing")
    assert tfcaf["path"] == config["tfcaf_path"] == os.path.relpath(path, REPO_ROOT) == "src/qllm/tfcafs/climbing.py"
    assert tfcaf["sha256"] == entry["sha256"] and tfcaf["trust"] == "shipped reference"
    assert tfcaf["igm_gate"] is config["igm_gate"] is entry["igm_gate"] is False
    assert tfcaf["seccomp"] is not None and tfcaf["worker_calls"] > 0


def test_an_old_generation_folder_with_meta_json_still_loads_and_trains(tmp_path, monkeypatch):
    """Generation folders written before per-file records hold tfcaf.py and meta.json. The fixture
    tests/qllm/data/record_v1 (with its test-only key) still loads by its record; a folder in that layout signed by
    this installation trains without being validated again."""
    from qllm.loader import load_tfcaf

    v1 = install_record_v1(tmp_path, monkeypatch)
    assert records.record_path(v1 / "tfcaf.py") == str(v1 / "meta.json")
    assert load_tfcaf(v1 / "tfcaf.py", env_config="lbf", n_agents=2, state_size=6).trust == "signed record"

    folder = tmp_path / "tfcafs" / "climbing" / "20260101-000000-000000"
    folder.mkdir(parents=True)
    (folder / "tfcaf.py").write_text(OTHER)
    meta = records.record_validation({"source": "llm (coder-evaluator loop)"}, sha256=sha256_file(folder / "tfcaf.py"),
                                     env_config="climbing", igm_gate=False, n_agents=2, state_size=6,
                                     validation={"ok": True, "stage": "ok", "checks": {"form": "tfcaf"}})
    (folder / "meta.json").write_text(json.dumps(meta))  # as generation wrote it: no "file", one per folder
    run_main(tmp_path / "run", "qllm", "climbing", f"tfcaf_path={folder / 'tfcaf.py'}", *TINY)
    tfcaf, config = trained_with(tmp_path / "run", "climbing")
    assert tfcaf["trust"] == "signed record" and tfcaf["igm_gate"] is False and config["igm_gate"] is False


@pytest.mark.parametrize("record_name", ["my_tfcaf.meta.json", "meta.json"])
def test_a_forged_per_file_or_folder_record_is_not_trusted(tmp_path, record_name):
    """Whatever the record file is called, only a signature by this installation's key counts."""
    from qllm.loader import TFCAFLoadError, load_tfcaf

    path = tmp_path / "my_tfcaf.py"
    path.write_text(MINE)
    digest = sha256_file(path)
    forged = {"sha256": digest, "policy_version": 2, "env_config": "climbing", "igm_gate": True, "form": "tfcaf",
              "n_agents": 2, "state_size": 6, "validation": {"ok": True}, "signature": "0" * 64}
    (tmp_path / record_name).write_text(json.dumps({"file": "my_tfcaf.py", "sha256": digest,
                                                   "validation_record": forged}))
    with pytest.raises(TFCAFLoadError, match="not signed by this installation"):
        load_tfcaf(path, env_config="climbing", n_agents=2, state_size=6)
