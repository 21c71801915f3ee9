"""Loading validated TFCAF files: hash checks against meta.json / MANIFEST.json, policy, shapes and devices."""
import copy
import hashlib
import json

import pytest
import torch

from qllm import loader
from qllm.loader import TFCAFCallError, TFCAFLoadError, load_tfcaf, shipped_reference

SRC = ("import torch\n\ndef tfcaf(state, n_agents):\n"
       "    w = torch.softmax(state[:, :n_agents], dim=-1) - 0.25\n"
       "    b = torch.zeros(state.shape[0], 1) + state[:, -1:]\n"  # no device=: must still follow the input
       "    return w, b\n")
LEGACY = ("import torch\n\ndef QLLMNetwork(agents_q, global_state):\n"
          "    return (torch.sigmoid(global_state[:, :1]) * agents_q).sum(-1, keepdim=True)\n")


def write_tfcaf(folder, source=SRC, name="tfcaf.py", meta=True, **meta_extra):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(source)
    if meta:
        (folder / "meta.json").write_text(json.dumps({"sha256": hashlib.sha256(source.encode()).hexdigest(),
                                                      **meta_extra}))
    return path


def test_load_and_call_on_any_leading_dims(tmp_path):
    tfcaf = load_tfcaf(write_tfcaf(tmp_path, igm_gate=False), n_agents=3)
    assert not tfcaf.legacy and tfcaf.igm_gate is False and tfcaf.sha256 == hashlib.sha256(SRC.encode()).hexdigest()
    states = torch.randn(4, 7, 5)
    w, b = tfcaf.weights_and_bias(states)
    assert w.shape == (4, 7, 3) and b.shape == (4, 7, 1)
    flat_w, _ = tfcaf(states.reshape(-1, 5))
    assert torch.equal(flat_w.reshape(4, 7, 3), w)
    q = torch.randn(4, 7, 3, requires_grad=True)
    q_tot, raw_w, _ = tfcaf.q_tot(q, states, igm_gate=True)
    assert torch.allclose(q_tot, (w.abs() * q).sum(-1, keepdim=True) + b)
    assert (raw_w < 0).any()  # raw weights are returned as the function gave them
    q_tot_off, _, _ = tfcaf.q_tot(q, states, igm_gate=False)
    assert torch.allclose(q_tot_off, (w * q).sum(-1, keepdim=True) + b)
    q_tot.sum().backward()
    assert torch.allclose(q.grad, w.abs())
    assert copy.deepcopy(tfcaf) is tfcaf


def test_legacy_form(tmp_path):
    tfcaf = load_tfcaf(write_tfcaf(tmp_path, LEGACY), n_agents=2)
    assert tfcaf.legacy
    q, s = torch.randn(3, 4, 2, requires_grad=True), torch.randn(3, 4, 6)
    q_tot, w, b = tfcaf.q_tot(q, s)
    assert q_tot.shape == (3, 4, 1) and w is None and b is None
    q_tot.sum().backward()
    assert q.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="use q_tot"):
        tfcaf.weights_and_bias(s)


def test_device_follows_the_input(tmp_path):
    """Tensors created without device= land on the input's device (the meta device stands in for a GPU),
    module-level constants included."""
    src = SRC.replace("import torch\n", "import torch\nSHIFT = torch.tensor([0.0, 0.1, 0.2])\n").replace(
        "- 0.25", "- 0.25 + SHIFT")
    tfcaf = load_tfcaf(write_tfcaf(tmp_path, src), n_agents=3)
    w, b = tfcaf.weights_and_bias(torch.empty(2, 6, 5, device="meta"))
    assert w.device.type == "meta" and b.device.type == "meta" and w.shape == (2, 6, 3)
    w_cpu, _ = tfcaf.weights_and_bias(torch.zeros(2, 5))
    assert torch.allclose(w_cpu, torch.full((2, 3), 1 / 3 - 0.25) + torch.tensor([0.0, 0.1, 0.2]))


def test_hash_mismatch_names_both_hashes(tmp_path):
    path = write_tfcaf(tmp_path)
    path.write_text(SRC.replace("0.25", "0.5"))  # edited after validation
    new = hashlib.sha256(path.read_bytes()).hexdigest()
    old = hashlib.sha256(SRC.encode()).hexdigest()
    with pytest.raises(TFCAFLoadError, match="changed after it was validated") as e:
        load_tfcaf(path)
    assert new in str(e.value) and old in str(e.value) and "Re-validate" in str(e.value)
    assert load_tfcaf(path, verify_hash=False).sha256 == new


def test_missing_metadata_and_missing_file(tmp_path):
    path = write_tfcaf(tmp_path, meta=False)
    with pytest.raises(TFCAFLoadError, match="no recorded SHA-256.*--write-meta"):
        load_tfcaf(path)
    with pytest.raises(TFCAFLoadError, match="no TFCAF file at"):
        load_tfcaf(tmp_path / "nope.py")
    other = write_tfcaf(tmp_path / "b", name="other.py", meta=False)
    (tmp_path / "b" / "meta.json").write_text(json.dumps({"file": "tfcaf.py", "sha256": "0" * 64}))
    with pytest.raises(TFCAFLoadError, match="no recorded SHA-256"):  # meta.json is about another file
        load_tfcaf(other)


def test_policy_is_checked_again_even_with_a_matching_hash(tmp_path):
    path = write_tfcaf(tmp_path, "import os\ndef tfcaf(state, n_agents):\n    return state, state\n")
    with pytest.raises(TFCAFLoadError, match="violates the TFCAF policy.*only torch"):
        load_tfcaf(path)
    path = write_tfcaf(tmp_path / "x", "import torch\nX = torch.zeros(2) / torch.ones(3)\n"
                                      "def tfcaf(state, n_agents):\n    return state, state\n")
    with pytest.raises(TFCAFLoadError, match="running .* failed: RuntimeError"):
        load_tfcaf(path)


def test_wrong_shapes_at_training_time_are_clear(tmp_path):
    tfcaf = load_tfcaf(write_tfcaf(tmp_path), n_agents=3)
    with pytest.raises(TFCAFCallError, match="wrong env or n_agents"):
        tfcaf.weights_and_bias(torch.randn(4, 5), n_agents=8)
    with pytest.raises(ValueError, match="n_agents is unknown"):
        load_tfcaf(tmp_path / "tfcaf.py").weights_and_bias(torch.randn(4, 5))


def test_manifest_entries_for_shipped_files(tmp_path, monkeypatch):
    folder = tmp_path / "tfcafs"
    path = write_tfcaf(folder, name="my_env.py", meta=False)
    digest = hashlib.sha256(SRC.encode()).hexdigest()
    (folder / "MANIFEST.json").write_text(json.dumps({"my_env": {"file": "my_env.py", "sha256": digest,
                                                                 "igm_gate": True}}))
    tfcaf = load_tfcaf(path, n_agents=3)
    assert tfcaf.igm_gate is True
    monkeypatch.setattr(loader, "TFCAF_DIR", str(folder))
    assert shipped_reference("my_env") == str(path)
    with pytest.raises(TFCAFLoadError, match="no shipped reference TFCAF for env config 'other'.*my_env"):
        shipped_reference("other")
    monkeypatch.setattr(loader, "TFCAF_DIR", str(tmp_path / "none"))
    with pytest.raises(TFCAFLoadError, match="MANIFEST.json is missing.*tfcaf_path"):
        shipped_reference("my_env")
