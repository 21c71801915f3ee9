"""qllm.records, the one module for TFCAF artifact records: hashes, `<name>.meta.json` (and the old folder-wide
meta.json), signed records, the manifest."""
import json
import os
import subprocess
import sys

import pytest

from helpers import install_record_v1
from qllm import records
from qllm.loader import TFCAFLoadError, load_tfcaf
from utils.files import sha256_bytes, sha256_file
from utils.paths import REPO_ROOT

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "record_v1")
REPORT = {"ok": True, "stage": "ok", "errors": [], "checks": {"form": "tfcaf"}}


def test_a_record_signed_before_the_records_module_is_still_accepted(tmp_path, monkeypatch):
    """tests/qllm/data/record_v1: a TFCAF, its meta.json and the (test-only) key that signed it, all written by
    `python src/qllm/validate.py --write-meta`'s code before issue 11."""
    folder = install_record_v1(tmp_path, monkeypatch, "t")
    spec = load_tfcaf(folder / "tfcaf.py", env_config="lbf", n_agents=2, state_size=6)
    assert spec.trust == "signed record" and spec.sha256 == sha256_file(folder / "tfcaf.py")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another_installation"))
    with pytest.raises(TFCAFLoadError, match="not signed by this installation"):
        load_tfcaf(folder / "tfcaf.py", env_config="lbf", n_agents=2, state_size=6)


def test_written_tfcaf_and_meta_round_trip_and_hash_the_bytes_on_disk(tmp_path):
    path, digest = records.write_tfcaf(str(tmp_path), "import torch\n# é\n")
    assert os.path.basename(path) == records.TFCAF_FILE and digest == sha256_file(path)
    assert records.read_tfcaf(path) == (open(path, "rb").read(), digest)
    assert records.read_meta(path) == {}
    meta = records.record_validation({"note": 1}, sha256=digest, env_config="lbf", igm_gate=False, n_agents=2,
                                     state_size=6, validation=REPORT)
    assert records.write_meta(path, meta) == str(tmp_path / "tfcaf.meta.json") == records.meta_path(path)
    assert records.read_meta(path) == json.loads((tmp_path / "tfcaf.meta.json").read_text()) == meta
    record = meta["validation_record"]
    assert meta["sha256"] == record["sha256"] == digest and record["igm_gate"] is False and record["form"] == "tfcaf"
    assert records.signed_record(path, digest, env_config="lbf", n_agents=2, state_size=6) == (record, None)
    assert records.signed_record(path, sha256_bytes("other"), env_config="lbf")[1].startswith("the file's SHA-256")


@pytest.mark.parametrize("name", ["meta.json", "tfcaf.meta.json"])
def test_unreadable_meta_counts_as_none_except_when_strict(tmp_path, name):
    (tmp_path / name).write_text("[1, 2")
    path = str(tmp_path / "tfcaf.py")
    assert records.read_meta(path) == {}
    with pytest.raises(ValueError):
        records.read_meta(path, strict=True)


def sign(sha256, env_config="lbf"):
    return records.record_validation({}, sha256=sha256, env_config=env_config, igm_gate=True, n_agents=2,
                                     state_size=6, validation=REPORT)


def test_each_file_has_its_own_record_beside_it(tmp_path):
    """Issue 12: validating other.py beside my_tfcaf.py used to overwrite my_tfcaf.py's record (one meta.json per
    folder). Now each file's record is `<name>.meta.json`, and both stay trainable."""
    sources = {"my_tfcaf.py": "import torch\n# mine\n", "other.py": "import torch\n# other\n"}
    for name, source in sources.items():
        (tmp_path / name).write_text(source)
        records.write_meta(tmp_path / name, dict(sign(sha256_bytes(source)), file=name))
    assert sorted(os.listdir(tmp_path)) == ["my_tfcaf.meta.json", "my_tfcaf.py", "other.meta.json", "other.py"]
    for name, source in sources.items():
        record, why = records.signed_record(tmp_path / name, sha256_bytes(source), env_config="lbf", n_agents=2,
                                            state_size=6)
        assert why is None and record["sha256"] == sha256_bytes(source)
    assert records.meta_path("x/tfcaf.py").endswith(os.path.join("x", "tfcaf.meta.json"))
    assert records.meta_path("x/notes").endswith(os.path.join("x", "notes.meta.json"))


def test_an_old_folder_record_is_read_for_the_file_it_names_and_a_per_file_record_wins(tmp_path):
    src = "import torch\n"
    for name in ("tfcaf.py", "mine.py"):
        (tmp_path / name).write_text(src)
    (tmp_path / "meta.json").write_text(json.dumps(sign(sha256_bytes(src))))  # a generation's: names no file
    assert records.record_path(tmp_path / "tfcaf.py") == str(tmp_path / "meta.json")
    assert records.read_meta(tmp_path / "mine.py") == {} and records.record_path(tmp_path / "mine.py") is None
    (tmp_path / "meta.json").write_text(json.dumps(dict(sign(sha256_bytes(src)), file="mine.py")))  # old validator
    assert records.read_meta(tmp_path / "mine.py")["file"] == "mine.py"
    assert records.read_meta(tmp_path / "tfcaf.py") == {}
    records.write_meta(tmp_path / "mine.py", {"note": "new"})
    assert records.read_meta(tmp_path / "mine.py") == {"note": "new"}  # <name>.meta.json takes precedence
    assert records.record_path(tmp_path / "mine.py") == str(tmp_path / "mine.meta.json")


def test_a_missing_record_is_named_in_words(tmp_path):
    src = "import torch\n\ndef tfcaf(state, n_agents):\n    return state[:, :n_agents], state[:, :1]\n"
    path = tmp_path / "my_tfcaf.py"
    path.write_text(src)
    (tmp_path / "other.meta.json").write_text("{}")  # another file's record does not count
    why = records.signed_record(path, sha256_bytes(src), env_config="lbf")[1]
    assert why == "there is no validation record for my_tfcaf.py (expected my_tfcaf.meta.json beside it)"
    (tmp_path / "my_tfcaf.meta.json").write_text(json.dumps({"sha256": "x"}))
    why = records.signed_record(path, sha256_bytes(src), env_config="lbf")[1]
    assert why == "my_tfcaf.meta.json beside it holds no signed validation record for my_tfcaf.py"
    with pytest.raises(TFCAFLoadError) as e:
        load_tfcaf(path, env_config="lbf_8x8_2p_2f_coop", igm_gate=False)
    assert "meta.json next to it" not in str(e.value)
    assert (f"python scripts/qllm_validate.py {path} --env-config lbf_8x8_2p_2f_coop --no-igm-gate --write-meta"
            in str(e.value))


def test_hash_is_recorded_even_when_the_key_is_unusable(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    meta = records.record_validation({}, sha256="a" * 64, env_config="lbf", igm_gate=True, n_agents=2, state_size=6,
                                     validation=REPORT)  # creates the key
    os.chmod(records.key_path(), 0o644)
    meta = {}
    with pytest.raises(records.RecordKeyError):
        records.record_validation(meta, sha256="b" * 64, env_config="lbf", igm_gate=True, n_agents=2, state_size=6,
                                  validation=REPORT)
    assert meta == {"sha256": "b" * 64}


def test_manifest_reads_matches_and_writes_in_its_format(tmp_path, monkeypatch):
    path, entry = records.shipped_reference("climbing")
    assert records.is_shipped_location(path) and entry["file"] == "climbing.py"
    assert records.shipped_entry(path, entry["sha256"], "climbing", igm_gate=False) == (entry, None)
    assert records.shipped_entry(path, "0" * 64)[1].endswith("not the packaged one")
    with open(records.manifest_path()) as f:
        assert f.read() == records.manifest_json(records.read_manifest())
    with pytest.raises(KeyError, match="no shipped reference TFCAF for env config 'gymma'"):
        records.shipped_reference("gymma")
    monkeypatch.setattr(records, "TFCAF_DIR", str(tmp_path))
    assert not records.is_shipped_location(path)
    records.write_manifest({"x": records.manifest_entry("x.py", "0" * 64, 1, 6, 2)})
    assert json.loads((tmp_path / records.MANIFEST).read_text()) == {
        "x": {"file": "x.py", "sha256": "0" * 64, "igm_gate": True, "state_size": 6, "n_agents": 2}}


@pytest.mark.parametrize("old", ["src/qllm/validate.py", "src/qllm/explain.py"])
def test_old_command_paths_still_run_the_scripts(old):
    res = subprocess.run([sys.executable, old, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--env-config" in res.stdout, res.stderr
