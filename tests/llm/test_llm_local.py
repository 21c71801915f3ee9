"""The real local model (Qwen2.5-Coder-1.5B-Instruct GGUF on a loopback llama.cpp server).

Runs when the model file and xllamacpp are present; skips with the set-up command otherwise, except in CI
(CI=true), where `./install.sh llm` fetches the model, so a missing model fails instead of passing by skipping.
"""
import json
import os
import subprocess
import sys
import time

from helpers import require_local_llm
from llm import default_model_path, make_llm

MODEL = default_model_path()


require_local_llm()


def gone(pid):
    """True when the process no longer runs (exited, or a zombie waiting for a reaper that is not us)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.1)
    return False


def test_local_model_answers_and_its_server_stops(tmp_path):
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    llm = make_llm({"backend": "local", "cache_dir": str(tmp_path / "cache"), "timeout_s": 120.0,
                    "local": {"threads": 1, "ctx": 2048}}, str(run_dir))
    start_s = time.monotonic() - t0
    pid = llm.server.pid
    try:
        assert not gone(pid)
        msg = [{"role": "user", "content": "What is 2 + 3? Answer with the number only."}]
        t1 = time.monotonic()
        (text,) = llm.chat(msg, temperature=0.0, max_tokens=8, tag="local-smoke")
        call_s = time.monotonic() - t1
        assert isinstance(text, str) and text.strip()
        assert llm.chat(msg, temperature=0.0, max_tokens=8) == [text]  # from the cache
        samples = llm.chat([{"role": "user", "content": "Name a colour."}], n=2, temperature=0.8, max_tokens=4)
        assert len(samples) == 2 and all(isinstance(s, str) for s in samples)
        led = llm.ledger()
        assert (led["calls"], led["requests"], led["cache_hits"], led["errors"]) == (3, 3, 1, 0)
        assert led["prompt_tokens"] > 0 and led["completion_tokens"] > 0 and led["estimated_requests"] == 0
    finally:
        llm.close()
    assert llm.server.proc.poll() is not None and gone(pid)
    lines = [json.loads(line) for line in open(run_dir / "llm_transcript.jsonl")]
    assert lines[0]["backend"] == "local" and lines[0]["responses"] == [text] and lines[1]["cache_hit"]
    print(f"\nlocal LLM: server start {start_s:.1f} s, first call {call_s:.2f} s, answer {text!r}")


def test_server_does_not_outlive_a_killed_parent(tmp_path):
    code = ("import os, signal, sys; sys.path.insert(0, 'src')\n"
            "from llm.local import LocalServer\n"
            f"s = LocalServer({MODEL!r}, threads=1, ctx=512, log_path={str(tmp_path / 'server.log')!r})\n"
            "s.start(); print(s.pid, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True, timeout=200)
    assert proc.returncode == -9
    child = int(proc.stdout.split()[0])
    assert wait_gone(child), f"server {child} outlived its parent"
