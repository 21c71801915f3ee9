"""Validate TFCAF source (untrusted) before it is used for training.

    report = validate_source(source, ValidationContext(n_agents, state_size, states, igm_gate))
    report.ok, report.stage, report.errors, report.feedback()   # feedback(): for the coder LLM; summary(): for people

Stages, in order: parse, policy (static allow-list, qllm.policy; nothing runs), then in a separate
process (qllm.sandbox_child): exec, shape, finite, gradient, gate, determinism, mutation, speed; "ok"
when everything passed. The child runs `python -I` (no user site, no PYTHON* variables) in a fresh
empty directory, with an environment that holds no API keys, under an address-space limit of
baseline + memory_mb, a CPU-time limit, a zero file-size limit (writing a file kills it), no core
dumps and no new file descriptors; a wall-clock deadline kills its whole process group. It runs the
code in the restricted namespace of qllm.runtime on the states of ctx plus the all-zero state
(padding rows of training batches).

The command line (validate a file on states of an env config, and with --write-meta sign a record for it) is
scripts/qllm_validate.py; `python src/qllm/validate.py ...` still runs it, for one release.
"""
import os
import sys

if __name__ == "__main__":  # the old path `python src/qllm/validate.py`, kept for one release: run the command
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "qllm_validate.py")
    os.execv(sys.executable, [sys.executable, script, *sys.argv[1:]])

import base64  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

import numpy as np  # noqa: E402

from qllm.policy import PolicyError, check_source  # noqa: E402
from qllm.sandbox import clean_text, kill_group, leftovers, spawn  # noqa: E402
from utils.text import printable  # noqa: E402

STAGES = ("parse", "policy", "exec", "shape", "finite", "linear", "gradient", "gate", "determinism", "mutation",
          "speed", "ok")
_BOOT = "from qllm.sandbox_child import main; main()"

HINTS = {
    "parse": "Fix the syntax and answer with the complete function in one ```python block.",
    "policy": "Only `import torch` / `import math` (and torch.nn.functional) are allowed; no dunder names, no "
              "private attributes, no exec/eval/open/getattr, no classes, no while loops, no try/except, no file, "
              "process or network access, no randomness. Rewrite the function with plain tensor operations.",
    "exec": "The code raised an error or exceeded a limit while it ran. Read the error, fix the cause and make "
            "sure every tensor you create uses device=state.device and dtype=state.dtype.",
    "shape": "tfcaf(state, n_agents) receives state [B, state_size] and must return (weights [B, n_agents], "
             "bias [B, 1]) for every B, including B = 1.",
    "finite": "Outputs must be finite for every state, including the all-zero state: add epsilons to "
              "denominators, clamp arguments of log/sqrt/exp.",
    "linear": "A TFCAF is linear in the agent Qs: Q_tot = sum_i w_i(s) * Q_i + b(s). Write tfcaf(state, n_agents) "
              "returning (weights [B, n_agents], bias [B, 1]) computed from the state only.",
    "gradient": "Q_tot = sum_i w_i * Q_i + b must be differentiable in the agent Qs: do not detach, round or "
                "zero every weight.",
    "gate": "With the IGM gate on, every weight must be non-negative (and Q_tot must not decrease when one "
            "agent's Q increases): use softmax, abs, softplus or clamp(min=0).",
    "determinism": "The same states must always give the same outputs, and each row must depend only on its "
                   "own state.",
    "mutation": "Never modify the input tensors in place; clone them first or use out-of-place operations.",
    "speed": "Vectorise over the batch dimension; loops over agents are fine, loops over rows are not.",
}
# where the coder's hint asks for an answer, a person reads this instead (the coder's text stays as it is: it is
# part of the prompts, and so of the LLM cache's keys)
PERSON_HINTS = {"parse": "Fix the syntax error; the file must define tfcaf(state, n_agents) (or QLLMNetwork)."}


@dataclass
class ValidationContext:
    n_agents: int
    state_size: int
    states: np.ndarray  # [N, S] float32 from real rollouts (qllm.states.sample_states)
    igm_gate: bool
    time_limit_s: float = 20.0  # wall clock for running the checks (after the child has imported torch)
    memory_mb: int = 1024  # address space the candidate may add to the child's baseline
    speed_batch: int = 4096
    speed_limit_ms: float = 200.0  # one forward call on speed_batch states, one CPU thread
    startup_timeout_s: float = 120.0  # for the child to start and import torch


@dataclass
class ValidationReport:
    ok: bool
    stage: str
    errors: list
    checks: dict = field(default_factory=dict)
    timing_ms: float = 0.0
    traceback: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    def feedback(self):
        """Text for the coder LLM: what failed, how to fix it, the traceback's last lines (no host paths)."""
        if self.ok:
            return "The function passed every check."
        lines = [f"Your function was rejected at the '{self.stage}' check:"]
        lines += [f"- {e}" for e in self.errors[:10]]
        if self.traceback:
            lines += ["Traceback (last lines):", *self.traceback[-8:]]
        if self.stage in HINTS:
            lines.append(f"How to fix: {HINTS[self.stage]}")
        lines.append("Answer with the complete corrected code in one ```python block.")
        return "\n".join(lines)

    def summary(self, name="the function"):
        """Text for a person: whether `name` passed, what failed and how to fix it (no instructions to an LLM)."""
        if self.ok:
            return f"{name} passed every check ({self.timing_ms / 1000:.1f} s)."
        lines = [f"{name} failed the '{self.stage}' check:"]
        lines += [f"- {e}" for e in self.errors[:10]]
        if len(self.errors) > 10:
            lines.append(f"- ... and {len(self.errors) - 10} more (see the report above)")
        if self.traceback:
            lines += ["Traceback (last lines):", *self.traceback[-8:]]
        hint = PERSON_HINTS.get(self.stage, HINTS.get(self.stage))
        if hint:
            lines.append(f"How to fix: {hint}")
        return "\n".join(lines)


def _report(t0, ok, stage, errors, checks, traceback=()):
    return ValidationReport(ok=ok, stage=stage, errors=list(errors), checks=checks,
                            timing_ms=round((time.perf_counter() - t0) * 1000, 1), traceback=list(traceback))


def validate_source(source, ctx, *, _check_policy=True):
    """Validate TFCAF source against ctx; never raises for anything the source does.

    `_check_policy=False` skips the static policy (tests use it to probe the sandbox layer alone)."""
    t0 = time.perf_counter()
    states = _check_ctx(ctx)
    checks = {}
    if not isinstance(source, str) or not source.strip():
        return _report(t0, False, "parse", ["no code: write a function tfcaf(state, n_agents)"], checks)
    try:
        result = check_source(source)
        checks["policy"] = {"ok": True, "form": result.form, "imports": result.imports}
        entry, form = result.entry, result.form
    except PolicyError as e:
        if e.stage == "parse" or _check_policy:  # the messages quote the code: no terminal escapes out of it
            return _report(t0, False, e.stage, [printable(v, 2000, newlines=False) for v in e.violations], checks)
        entry, form = ("QLLMNetwork", "legacy") if "def QLLMNetwork" in source else ("tfcaf", "tfcaf")
        checks["policy"] = {"ok": False, "skipped": True, "violations": e.violations}
    res = _run_child(source, entry, form, states, ctx)
    checks.update(res.get("checks", {}))
    return _report(t0, bool(res.get("ok")), res.get("stage", "exec"), res.get("errors", []), checks,
                   res.get("traceback", []))


def _check_ctx(ctx):
    states = np.ascontiguousarray(ctx.states, dtype=np.float32)
    if states.ndim != 2 or states.shape[1] != int(ctx.state_size) or states.shape[0] < 1:
        raise ValueError(f"ctx.states must be [N, state_size={ctx.state_size}] with N >= 1, got {states.shape}")
    if not np.isfinite(states).all():
        raise ValueError("ctx.states contains NaN or inf: the env produced invalid states")
    if int(ctx.n_agents) < 1:
        raise ValueError(f"ctx.n_agents must be >= 1, got {ctx.n_agents}")
    return states


_SIGNALS = {
    signal.SIGXCPU: "it exceeded the CPU-time limit (infinite or very long loop?)",
    signal.SIGKILL: "it was killed (memory exhausted or time limit)",
    signal.SIGXFSZ: "it tried to write a file",
    signal.SIGSEGV: "it crashed (segmentation fault)",
    signal.SIGABRT: "it aborted",
}


def _run_child(source, entry, form, states, ctx):
    token = secrets.token_hex(16)
    request = {"token": token, "parent_pid": os.getpid(),
               "source": source, "entry": entry, "form": form, "n_agents": int(ctx.n_agents),
               "igm_gate": bool(ctx.igm_gate), "memory_mb": int(ctx.memory_mb), "time_limit_s": float(ctx.time_limit_s),
               "speed_batch": int(ctx.speed_batch), "speed_limit_ms": float(ctx.speed_limit_ms),
               "states_shape": list(states.shape), "states_b64": base64.b64encode(states.tobytes()).decode()}
    proc, workdir = spawn(_BOOT)
    lines, err_chunks = queue.Queue(), []

    def write():
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass

    def read_out():
        for raw in iter(lambda: proc.stdout.readline(1 << 20), b""):  # lines over 1 MB arrive in pieces
            lines.put(raw.decode(errors="replace"))
        lines.put(None)

    def read_err():
        size = 0
        for raw in proc.stderr:
            if size < 200_000:
                err_chunks.append(raw.decode(errors="replace"))
                size += len(raw)

    threads = [threading.Thread(target=f, daemon=True) for f in (write, read_out, read_err)]
    for t in threads:
        t.start()
    prefix = token + " "
    stage, sandbox, result, timed_out = "exec", {}, None, None
    deadline = time.monotonic() + float(ctx.startup_timeout_s)
    ready = False
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                timed_out = ("the checks", ctx.time_limit_s) if ready else ("start-up", ctx.startup_timeout_s)
                break
            if line is None:
                break
            if not line.startswith(prefix):
                continue
            kind, _, payload = line[len(prefix):].rstrip("\n").partition(" ")
            if kind == "READY":
                ready = True
                sandbox = json.loads(payload)  # written before any candidate code ran
                deadline = time.monotonic() + float(ctx.time_limit_s)
            elif kind == "STAGE":
                stage = payload.strip() or stage
            elif kind == "RESULT":
                try:
                    result = json.loads(payload)
                except ValueError:
                    result = {"ok": False, "stage": stage, "errors": ["the sandbox returned an unreadable result"]}
                break
    finally:
        kill_group(proc)
        for t in threads[1:]:
            t.join(timeout=5)
        created = leftovers(workdir)
        shutil.rmtree(workdir, ignore_errors=True)

    stderr_tail = _scrub_tail("".join(err_chunks))
    if result is None:
        stage = "exec" if stage == "shape" else stage  # stopped on the first calls: a run-time failure
        if timed_out:
            what, limit = timed_out
            errors = [f"timed out after {limit:g} s during {what} (in the '{stage}' check): infinite or very long "
                      f"loop, or code far too slow"]
        else:
            rc = proc.returncode
            why = _SIGNALS.get(-rc, f"it died with signal {-rc}") if rc is not None and rc < 0 else \
                f"it exited with status {rc}"
            if not ready:
                errors = [f"the sandbox failed to start ({why}): {stderr_tail[-1] if stderr_tail else 'no output'}"]
            else:
                errors = [f"the sandbox process stopped during the '{stage}' check: {why}"]
        result = {"ok": False, "stage": stage, "errors": errors, "traceback": stderr_tail[-6:], "checks": {}}
    result = _clean(result)  # the child is untrusted: no terminal escapes or host paths reach a console or a log
    result.setdefault("checks", {})["sandbox"] = sandbox
    if created:
        result.update(ok=False, stage="exec" if result.get("ok") else result.get("stage", "exec"))
        result.setdefault("errors", []).append(f"the code created files in its working directory: {created[:5]}")
    return result


def _scrub_tail(text, n=12):
    return [clean_text(line) for line in text.strip().splitlines()[-n:]] if text.strip() else []


def _clean(value):
    """The child's result with every string (keys too) through clean_text; numbers and booleans as they are."""
    if isinstance(value, str):
        return clean_text(value, 4000)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value
