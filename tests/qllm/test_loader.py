"""Which TFCAF files may be trained with: packaged manifest, signed records, re-validation; nothing is executed."""
import hashlib
import json
import os
import shutil
import stat

import numpy as np
import pytest

from qllm import records
from qllm.loader import TFCAFLoadError, load_tfcaf, shipped_reference
from qllm.policy import POLICY_VERSION
from qllm.records import record_problem, sign_record
from qllm.validate import ValidationContext, validate_source

SRC = ("import torch\n\ndef tfcaf(state, n_agents):\n"
       "    w = torch.softmax(state[:, :n_agents], dim=-1)\n"
       "    return w, state[:, -1:]\n")
REPORT = {"ok": True, "stage": "ok", "errors": [], "checks": {"form": "tfcaf"}}


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def write_tfcaf(folder, source=SRC, meta=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tfcaf.py").write_text(source)
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder / "tfcaf.py"


def signed(source=SRC, **kw):
    fields = dict(sha256=sha(source), env_config="lbf", igm_gate=True, form="tfcaf", n_agents=2, state_size=6,
                  validation=REPORT)
    fields.update(kw)
    return {"validation_record": sign_record(**fields)}


class Revalidation:
    """Records what the loader asked to re-validate; answers with a real sandbox validation on random states."""

    def __init__(self):
        self.calls = []

    def __call__(self, source, igm_gate):
        self.calls.append(igm_gate)
        states = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
        return validate_source(source, ValidationContext(n_agents=2, state_size=6, states=states, igm_gate=igm_gate))


def test_shipped_reference_is_trusted_by_the_packaged_manifest():
    path = shipped_reference("lbf_8x8_2p_2f_coop")
    spec = load_tfcaf(path, env_config="lbf_8x8_2p_2f_coop", n_agents=2, state_size=14)
    assert spec.trust == "shipped reference" and spec.igm_gate is True and spec.form == "tfcaf"
    assert spec.sha256 == json.load(open(records.manifest_path()))["lbf_8x8_2p_2f_coop"]["sha256"]


def test_a_copied_manifest_vouches_for_nothing(tmp_path):
    """A MANIFEST.json (and a meta.json with only a hash) next to a file elsewhere do not make it trainable."""
    folder = tmp_path / "copy"
    path = write_tfcaf(folder, meta={"file": "tfcaf.py", "sha256": sha(SRC)})
    (folder / "MANIFEST.json").write_text(json.dumps({"lbf": {"file": "tfcaf.py", "sha256": sha(SRC)}}))
    with pytest.raises(TFCAFLoadError, match="no signed validation record|not signed"):
        load_tfcaf(path, env_config="lbf", n_agents=2, state_size=6)


def test_signed_record_makes_the_file_trainable_without_revalidation(tmp_path):
    path = write_tfcaf(tmp_path, meta=signed(igm_gate=False))
    revalidate = Revalidation()
    spec = load_tfcaf(path, env_config="lbf", n_agents=2, state_size=6, revalidate=revalidate)
    assert spec.trust == "signed record" and spec.igm_gate is False and revalidate.calls == []


@pytest.mark.parametrize("change,reason", [
    (lambda m: m["validation_record"].update(igm_gate=False), "not signed by this installation"),
    (lambda m: m["validation_record"].update(signature="0" * 64), "not signed by this installation"),
    (lambda m: m["validation_record"].pop("signature"), "not signed by this installation"),
])
def test_forged_or_edited_records_are_not_trusted(tmp_path, change, reason):
    meta = signed()
    change(meta)
    path = write_tfcaf(tmp_path, meta=meta)
    with pytest.raises(TFCAFLoadError, match=reason):
        load_tfcaf(path, env_config="lbf", n_agents=2, state_size=6)


def test_record_is_bound_to_file_policy_env_and_sizes():
    record = signed()["validation_record"]
    assert record_problem(record, sha256=sha(SRC), env_config="lbf", n_agents=2, state_size=6) is None
    assert "SHA-256" in record_problem(record, sha256=sha(SRC + "#"), env_config="lbf")
    assert "env_config" in record_problem(record, sha256=sha(SRC), env_config="climbing")
    assert "n_agents" in record_problem(record, sha256=sha(SRC), env_config="lbf", n_agents=3)
    assert "igm_gate" in record_problem(record, sha256=sha(SRC), env_config="lbf", igm_gate=False)
    assert record_problem(record, sha256=sha(SRC), env_config="lbf", igm_gate=None) is None  # null: recorded gate
    assert "unknown" in record_problem(record, sha256=sha(SRC), env_config=None)
    old = sign_record(sha256=sha(SRC), env_config="lbf", igm_gate=True, form="tfcaf", n_agents=2, state_size=6,
                      validation=REPORT)
    old["policy_version"] = POLICY_VERSION - 1
    assert "not signed" in record_problem(old, sha256=sha(SRC), env_config="lbf")  # the version is signed too
    with pytest.raises(ValueError, match="passing"):
        sign_record(sha256="x", env_config="lbf", igm_gate=True, form="tfcaf", n_agents=2, state_size=6,
                    validation={"ok": False})


def test_a_record_signed_with_another_key_is_not_trusted(tmp_path, monkeypatch):
    meta = signed()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other_user"))
    path = write_tfcaf(tmp_path / "t", meta=meta)
    with pytest.raises(TFCAFLoadError, match="not signed by this installation"):
        load_tfcaf(path, env_config="lbf", n_agents=2, state_size=6)


def test_key_is_created_private_and_refused_when_readable_by_others(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    signed()
    key = records.key_path()
    assert key.startswith(str(tmp_path)) and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    os.chmod(key, 0o644)
    with pytest.raises(records.RecordKeyError, match="chmod 600"):
        signed()


def test_unsigned_file_is_validated_again_and_the_log_says_so(tmp_path, caplog):
    import logging

    path = write_tfcaf(tmp_path, meta={"sha256": sha(SRC)})  # a hand-written record: only a hash
    revalidate = Revalidation()
    log = logging.getLogger("test_loader")
    with caplog.at_level(logging.WARNING):
        spec = load_tfcaf(path, env_config="lbf", n_agents=2, state_size=6, igm_gate=True, revalidate=revalidate,
                          log=log)
    assert spec.trust == "re-validated" and revalidate.calls == [True] and spec.report["ok"]
    assert "validating it again in the sandbox" in caplog.text


def test_failing_revalidation_refuses_the_file(tmp_path):
    bad = SRC.replace("torch.softmax(state[:, :n_agents], dim=-1)", "state[:, :n_agents] - 10.0")
    path = write_tfcaf(tmp_path, bad, meta={"sha256": sha(bad)})
    with pytest.raises(TFCAFLoadError, match="failed validation at the 'gate' check"):
        load_tfcaf(path, env_config="lbf", n_agents=2, state_size=6, igm_gate=True, revalidate=Revalidation())


def test_edited_shipped_reference_is_not_trusted(tmp_path, monkeypatch):
    folder = tmp_path / "tfcafs"
    shutil.copytree(records.TFCAF_DIR, folder)
    monkeypatch.setattr(records, "TFCAF_DIR", str(folder))
    path = folder / "lbf.py"
    assert load_tfcaf(path).trust == "shipped reference"
    path.write_text(path.read_text() + "# edited\n")
    with pytest.raises(TFCAFLoadError, match="not the packaged one"):
        load_tfcaf(path)


def test_policy_and_missing_files_are_refused_before_anything_else(tmp_path):
    path = write_tfcaf(tmp_path, SRC + "import os\n", meta=signed(SRC + "import os\n"))
    with pytest.raises(TFCAFLoadError, match="violates the TFCAF policy"):
        load_tfcaf(path)
    with pytest.raises(TFCAFLoadError, match="no TFCAF file"):
        load_tfcaf(tmp_path / "nope.py")
    with pytest.raises(TFCAFLoadError, match="no shipped reference TFCAF for env config 'nope'"):
        shipped_reference("nope")


def test_a_file_inside_an_unfinished_generation_is_refused(tmp_path):
    from utils.files import temp_path

    folder = tmp_path / os.path.basename(temp_path(str(tmp_path / "20261203-000000")))
    path = write_tfcaf(folder, meta=signed())
    with pytest.raises(TFCAFLoadError, match="unfinished generation"):
        load_tfcaf(path, env_config="lbf", n_agents=2, state_size=6)


def test_a_shipped_reference_is_trusted_only_for_the_runs_it_was_written_for():
    lbf = shipped_reference("lbf_8x8_2p_2f_coop")
    assert load_tfcaf(lbf, env_config="lbf_2s_10x10_3p_3f", n_agents=3, state_size=21).trust == "shipped reference"
    with pytest.raises(TFCAFLoadError, match="shipped reference for .*lbf.*, not for env config 'mpe_spread'"):
        load_tfcaf(lbf, env_config="mpe_spread", n_agents=2, state_size=14)
    with pytest.raises(TFCAFLoadError, match="written for state_size 14, this run has 15"):
        load_tfcaf(lbf, env_config="lbf_8x8_2p_2f_coop", n_agents=2, state_size=15)
    climbing = shipped_reference("climbing")  # written for raw weights (igm_gate false)
    assert load_tfcaf(climbing, env_config="climbing", igm_gate=False).igm_gate is False
    with pytest.raises(TFCAFLoadError, match="written for igm_gate false, this run turns the gate on"):
        load_tfcaf(climbing, env_config="climbing", igm_gate=True)
