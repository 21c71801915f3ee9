"""The TFCAF worker: a long-lived sandboxed process that computes a TFCAF's weights and bias, so that the
training process never runs TFCAF code (issue 10).

    worker = TFCAFWorker(source, form="tfcaf", n_agents=2, sha256=..., igm_gate=True)
    w, b = worker.evaluate(states)        # float32 [N, S] -> w [N, n], b [N, 1] (numpy), every answer checked
    worker.close()

The child is started like the validator (qllm.sandbox: `python -I`, empty working directory, no secrets in its
environment, own session) and confines itself before the code runs (qllm.confine: address-space limit, no file
writes, no new file descriptors, seccomp, death with the parent). It dies when this process closes its pipe or
dies. Every answer is checked here: its size (so shape), finiteness and, with the IGM gate on, non-negative
weights; an answer that fails a check, an error raised by the code, a crash or no answer within `timeout_s`
raises TFCAFWorkerError naming the state row, the caller's context (e.g. the step) and the function's hash.
"""
import json
import os
import selectors
import signal
import subprocess
import threading
import time
import weakref
from collections import deque

import numpy as np

from qllm.runtime import CHUNK_ROWS, GATE_TOLERANCE
from qllm.sandbox import clean_text, kill_group, remove_workdir, spawn
from qllm.worker_child import ANSWER, HEADER

_BOOT = "from qllm.worker_child import main; main()"
# Validation refuses a function slower than 200 ms per 4096 states (0.05 ms a state); over the last SLOW_WINDOW
# answers, more than 20 times that means it has become slow on training's states: stop rather than crawl.
SLOW_MS_PER_STATE = 1.0
SLOW_WINDOW = 20


class TFCAFWorkerError(RuntimeError):
    """The TFCAF misbehaved at training time (or its worker died); the message says where and what to do."""


class Prestarted:
    """A worker process started early (it imports torch while the run builds its envs, learner and first
    episodes), handed to TFCAFWorker(process=...) once the source is trusted. Ended by close() or, if never
    handed over, when this object is garbage-collected."""

    def __init__(self):
        self.proc, self.workdir = spawn(_BOOT)
        self._finalizer = weakref.finalize(self, _shutdown, self.proc, self.workdir)

    def take(self):
        """(proc, workdir), now owned by the caller."""
        self._finalizer.detach()
        return self.proc, self.workdir

    def close(self):
        self._finalizer()


def prestart():
    return Prestarted()


class TFCAFWorker:
    def __init__(self, source, *, form, n_agents, sha256, igm_gate, name="TFCAF", timeout_s=30.0, memory_mb=1024,
                 startup_timeout_s=120.0, process=None):
        self.n_agents, self.sha256, self.igm_gate, self.name = int(n_agents), sha256, bool(igm_gate), name
        self.timeout_s, self.startup_timeout_s = float(timeout_s), float(startup_timeout_s)
        self.calls, self.states_evaluated, self.seconds = 0, 0, 0.0
        self._recent = deque(maxlen=SLOW_WINDOW)  # ms per state the function saw, of the last answers
        self.sandbox = None  # the child's report of its confinement, once it is ready
        self._stderr = deque(maxlen=20)
        self._proc, self._workdir = (process or prestart()).take()
        # on self, not on the process: the process object stays referenced by the finalizer's arguments
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._workdir)
        self._drain_thread = threading.Thread(target=_drain, args=(self._proc.stderr, self._stderr), daemon=True)
        self._drain_thread.start()
        init = {"source": source, "entry": "QLLMNetwork" if form == "legacy" else "tfcaf", "form": form,
                "n_agents": self.n_agents, "memory_mb": int(memory_mb), "parent_pid": os.getpid()}
        self._fd_out = self._proc.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd_out, selectors.EVENT_READ)
        self._buffer = b""
        try:
            self._proc.stdin.write((json.dumps(init) + "\n").encode())
            self._proc.stdin.flush()
        except OSError as e:
            self.close()
            raise TFCAFWorkerError(f"the sandboxed worker for {self._who()} did not start: {e}") from None

    def wait_ready(self):
        """Block until the child has confined itself and loaded the code (at most startup_timeout_s)."""
        if self.sandbox is not None:
            return self.sandbox
        try:
            line = self._read_line(time.monotonic() + self.startup_timeout_s, self.startup_timeout_s)
            kind, _, payload = line.partition(b" ")
            sandbox = json.loads(payload) if kind == b"READY" else None
        except (OSError, ValueError, TFCAFWorkerError) as e:
            self.close()
            raise TFCAFWorkerError(f"the sandboxed worker for {self._who()} did not start: {clean_text(e, 300)}. "
                                   f"{self._stderr_tail()}") from None
        if sandbox is None:
            self.close()
            detail = _error_text(payload) if kind == b"FAILED" else clean_text(line[:300].decode(errors="replace"))
            raise TFCAFWorkerError(f"{self._who()} failed to load in the sandboxed worker: {detail}. "
                                   f"{self._stderr_tail()}")
        self.sandbox = sandbox
        return self.sandbox

    # ----- requests -----
    def evaluate(self, states, where=None):
        """w [N, n], b [N, 1] float32 for states [N, S]; `where(row) -> str` names a row in error messages."""
        if self._proc is None:
            raise TFCAFWorkerError(f"the worker for {self._who()} was closed after an earlier failure")
        self.wait_ready()
        states = np.ascontiguousarray(states, dtype=np.float32)
        rows, cols = states.shape
        n = self.n_agents
        if rows == 0:
            return np.zeros((0, n), np.float32), np.zeros((0, 1), np.float32)
        t0 = time.perf_counter()
        try:
            self._proc.stdin.write(HEADER.pack(rows, cols))
            self._proc.stdin.write(memoryview(states).cast("B"))
            self._proc.stdin.flush()
            deadline = time.monotonic() + self.timeout_s
            status, length = ANSWER.unpack(self._read_exact(ANSWER.size, deadline))
            if length > rows * (n + 1) * 4 + (1 << 20):
                raise TFCAFWorkerError(f"an answer of {length} bytes for {rows} states")
            payload = self._read_exact(length, deadline)
        except (OSError, TFCAFWorkerError) as e:
            self.close()
            raise TFCAFWorkerError(f"{self._who()} gave no usable answer{self._at(where)}: {e}. "
                                   f"{self._stderr_tail()}The run stops; checkpoints already written are "
                                   f"untouched.") from None
        seconds = time.perf_counter() - t0
        self.calls += 1
        self.states_evaluated += rows
        self.seconds += seconds
        self._recent.append(1000 * seconds / (-(-rows // CHUNK_ROWS) * CHUNK_ROWS))
        self._check_speed(where)
        if status != 0:
            self.close()
            raise TFCAFWorkerError(f"{self._who()} raised an error{self._at(where)}: {_error_text(payload)}. "
                                   f"The run stops; checkpoints already written are untouched.")
        if length != rows * (n + 1) * 4:
            self.close()
            raise TFCAFWorkerError(f"{self._who()} answered {length} bytes for {rows} states{self._at(where)} "
                                   f"(expected {rows * (n + 1) * 4})")
        values = np.frombuffer(payload, dtype=np.float32).copy()  # writable, owned by the caller
        w, b = values[:rows * n].reshape(rows, n), values[rows * n:].reshape(rows, 1)
        self._check(w, b, states, where)
        return w, b

    def _check_speed(self, where):
        if len(self._recent) < SLOW_WINDOW:
            return
        ms = sorted(self._recent)[SLOW_WINDOW // 2]  # the median: one stall of the machine (suspend, swap) is not it
        if ms > SLOW_MS_PER_STATE:
            self.close()
            raise TFCAFWorkerError(f"{self._who()} has become too slow{self._at(where)}: a median of {ms:.2f} ms a "
                                   f"state over its last {SLOW_WINDOW} answers, where validation allows 0.05 ms "
                                   f"(this stops at {SLOW_MS_PER_STATE:g}). It is slow on some of training's states. "
                                   f"The run stops; checkpoints already written are untouched.")

    def _check(self, w, b, states, where):
        finite = np.isfinite(w).all(axis=1) & np.isfinite(b[:, 0])
        problem = None
        if not finite.all():
            row, problem = int(np.argmin(finite)), "NaN or inf weights or bias"
        elif self.igm_gate and (w < -GATE_TOLERANCE).any():
            row = int(np.argmax((w < -GATE_TOLERANCE).any(axis=1)))
            problem = f"negative weights with the IGM gate on (min {float(w[row].min()):.4g})"
        if problem:
            self.close()
            state = np.array2string(states[row][:12], precision=4, separator=", ")
            more = " ..." if states.shape[1] > 12 else ""
            raise TFCAFWorkerError(f"{self._who()} returned {problem} for state row {row}{self._at(where, row)}: "
                                   f"state = {state}{more}; weights = {np.array2string(w[row], precision=4)}, "
                                   f"bias = {float(b[row, 0]):.4g}. It passed validation, so it misbehaves "
                                   f"only on some states or after some calls. The run stops; checkpoints already "
                                   f"written are untouched. Fix the function and validate it again.")

    # ----- plumbing -----
    def _read_line(self, deadline, limit):
        while b"\n" not in self._buffer:
            self._buffer += self._read_some(deadline, limit)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _read_exact(self, n, deadline):
        while len(self._buffer) < n:
            self._buffer += self._read_some(deadline, self.timeout_s)
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _read_some(self, deadline, limit):
        # an answer already in the pipe counts even past the deadline (the machine may have been suspended)
        if not self._selector.select(timeout=max(0.0, deadline - time.monotonic())):
            raise TFCAFWorkerError(f"no answer within {limit:g} s (an endless loop or far too slow: raise "
                                   f"tfcaf_timeout_s only if the function is legitimately slow)")
        chunk = os.read(self._fd_out, 1 << 20)
        if not chunk:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            rc = self._proc.returncode
            how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
            raise TFCAFWorkerError(f"the worker process died ({how})")
        return chunk

    def _who(self):
        return f"{self.name} (sha256 {str(self.sha256)[:16]})"

    @staticmethod
    def _at(where, row=None):
        if where is None:
            return ""
        return f" at {where(row)}" if row is not None else f" at {where(None)}"

    def _stderr_tail(self):
        tail = [line for line in self._stderr if line.strip()]
        return f"Worker output: {clean_text(' | '.join(tail[-3:]), 500)}. " if tail else ""

    def close(self):
        if self._proc is not None:
            self._selector.close()
            try:  # end it, then let the drain thread read what it wrote last (error messages quote it)
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                pass
            self._drain_thread.join(timeout=1.0)
            self._finalizer()
            self._proc = None

    def cost_per_1000_states_ms(self):
        return 1000.0 * 1000.0 * self.seconds / max(1, self.states_evaluated)


def _drain(stream, sink):
    try:
        for raw in iter(lambda: stream.readline(4096), b""):
            sink.append(raw.decode(errors="replace").rstrip()[:300])
    except (OSError, ValueError):
        pass


def _shutdown(proc, workdir):
    kill_group(proc)  # also when a prestarted process was never used (its run failed to build)
    remove_workdir(workdir)


def _error_text(payload):
    """The child's error report, cleaned here: the child is not trusted to have scrubbed it."""
    try:
        info = json.loads(payload)
        frames = "; ".join(str(f) for f in info.get("frames", [])[:5])
        text = str(info.get("error", "unknown error")) + (f" ({frames})" if frames else "")
    except (ValueError, AttributeError, TypeError):
        text = payload[:300].decode(errors="replace")
    return clean_text(text, 800)
