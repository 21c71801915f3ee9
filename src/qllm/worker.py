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
import hashlib
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

from qllm.runtime import CHUNK_ROWS, GATE_TOLERANCE, MAX_ABS_OUTPUT
from qllm.sandbox import clean_text, kill_group, remove_workdir, spawn
from qllm.worker_child import ANSWER, HEADER

_BOOT = "from qllm.worker_child import main; main()"
# Validation refuses a function slower than 200 ms per 4096 states (0.05 ms a state); over the last SLOW_WINDOW
# answers, more than 20 times that means it has become slow on training's states: stop rather than crawl.
SLOW_MS_PER_STATE = 1.0
SLOW_WINDOW = 20
# Red-team finding: slow on fewer than half of the answers (4-6 s each, 1 ms otherwise) kept the median fast and
# stalled training unnoticed. So the run's whole time in the function may average no more than SLOW_MS_PER_STATE a
# state (as evaluated, chunks padded), plus STALL_GRACE_S for the machine's own stalls (suspend, swap).
STALL_GRACE_S = 10.0
POOL_ROWS = 256  # states of earlier requests, to fill the second asking's last chunk


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
        self._rows_asked = 0  # states the function evaluated (chunks padded), every exchange: the stall budget
        self._recent = deque(maxlen=SLOW_WINDOW)  # ms per state the function saw, of the last answers
        self._pool = np.zeros((0, 0), np.float32)  # states of earlier requests (evaluate)
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
        """w [N, n], b [N, 1] float32 for states [N, S]; `where(row) -> str` names a row in error messages.

        The function must compute each row from its own state; validation checks that on its states, and this
        checks it on every request, so that a function cannot tell training from validation by its batch:
        identical states (e.g. the all-zero states of padded time steps) are sent once, in an order shuffled by
        a seed drawn from the states' bytes (a rerun or a resumed run gets the same answers), with the last chunk
        filled by copies of real states; then every state is asked again in another order, the last chunk filled
        with states of earlier requests (made-up ones while there are too few). Two answers for one state that
        differ stop the run."""
        if self._proc is None:
            raise TFCAFWorkerError(f"the worker for {self._who()} was closed after an earlier failure")
        self.wait_ready()
        states = np.ascontiguousarray(states, dtype=np.float32)
        rows = states.shape[0]
        n = self.n_agents
        if rows == 0:
            return np.zeros((0, n), np.float32), np.zeros((0, 1), np.float32)
        _, first, inverse = np.unique(states.view(np.dtype((np.void, 4 * states.shape[1]))).ravel(),
                                      return_index=True, return_inverse=True)  # by bytes: -0.0 stays -0.0
        distinct = states[first]
        k = distinct.shape[0]
        rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(states.tobytes(), digest_size=8).digest(),
                                                   "little"))
        order, fill = rng.permutation(k), (-k) % CHUNK_ROWS
        sent = np.concatenate([order, rng.integers(0, k, fill)])
        # and again, in another order, the last chunk filled from earlier requests' states; one round trip for both
        again = rng.permutation(k)
        if fill == 0:
            filler = distinct[:0]
        elif len(self._pool) >= fill:
            filler = self._pool[rng.choice(len(self._pool), fill, replace=False)]
        else:  # too few earlier states: distinct made-up ones on their scale, as validation fills its chunk
            filler = (distinct.mean(0) + distinct.std(0) * rng.standard_normal((fill, distinct.shape[1]))).astype(
                np.float32)
        m = len(sent)
        w_all, b_all = self._exchange(np.concatenate([distinct[sent], distinct[again], filler]), where, count=rows)
        w, b = np.empty((k, n), np.float32), np.empty((k, 1), np.float32)
        w[order], b[order] = w_all[:k], b_all[:k]
        self._check(w, b, distinct, where, first)
        self._same_answers(distinct, w, b, sent[k:], w_all[k:m], b_all[k:m], where, first)
        self._same_answers(distinct, w, b, again, w_all[m:m + k], b_all[m:m + k], where, first)
        self._pool = np.concatenate([distinct[order[:CHUNK_ROWS]], self._pool])[:POOL_ROWS] if len(self._pool) \
            else distinct[order[:CHUNK_ROWS]]
        return w[inverse.ravel()], b[inverse.ravel()]

    def _same_answers(self, states, w, b, index, w2, b2, where, rows_of):
        """The answers w2, b2 for states[index], asked in another batch, must be w[index], b[index] (to the
        tolerance validation allows for batch layout). `rows_of[i]`: the request's row of states[i]."""
        if not len(index):
            return
        close = np.isclose(w2, w[index], rtol=1e-4, atol=1e-5).all(1) & np.isclose(b2, b[index], rtol=1e-4,
                                                                                   atol=1e-5).all(1)
        if close.all():
            return
        differs = np.flatnonzero(~close)
        j = int(differs[np.argmin(rows_of[index[differs]])])  # the earliest row of the request
        i = int(index[j])
        row = int(rows_of[i])
        self.close()
        state = np.array2string(states[i][:12], precision=4, separator=", ")
        raise TFCAFWorkerError(f"{self._who()} gave two answers for the state of row {row}{self._at(where, row)} "
                               f"in two batches: weights {np.array2string(w[i], precision=4)} and "
                               f"{np.array2string(w2[j], precision=4)}, bias {float(b[i, 0]):.4g} and "
                               f"{float(b2[j, 0]):.4g} (state = {state}{' ...' if states.shape[1] > 12 else ''}). "
                               f"Its output depends on the other states in the batch (their number, order or "
                               f"values), which validation forbids: compute each row from its own state only. The "
                               f"run stops; checkpoints already written are untouched.")

    def _exchange(self, states, where, count=0):
        """One request to the child: (w, b) as it answered, size and status checked; `count`: the rows of the
        request it answers (calls, states and the speed check count it)."""
        rows, cols = states.shape
        n = self.n_agents
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
        self.seconds += seconds
        padded = -(-rows // CHUNK_ROWS) * CHUNK_ROWS
        self._rows_asked += padded
        if count:
            self.calls += 1
            self.states_evaluated += count  # the request's rows: cost per 1,000 states is per state asked for
            self._recent.append(1000 * seconds / padded)
            self._check_speed(where)
        self._check_stalls(where)
        if status != 0:
            self.close()
            raise TFCAFWorkerError(f"{self._who()} raised an error{self._at(where)}: {_error_text(payload)}. "
                                   f"The run stops; checkpoints already written are untouched.")
        if length != rows * (n + 1) * 4:
            self.close()
            raise TFCAFWorkerError(f"{self._who()} answered {length} bytes for {rows} states{self._at(where)} "
                                   f"(expected {rows * (n + 1) * 4})")
        values = np.frombuffer(payload, dtype=np.float32).copy()  # writable, owned by the caller
        return values[:rows * n].reshape(rows, n), values[rows * n:].reshape(rows, 1)

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

    def _check_stalls(self, where):
        allowed = STALL_GRACE_S + SLOW_MS_PER_STATE * self._rows_asked / 1000
        if self.seconds > allowed:
            self.close()
            raise TFCAFWorkerError(f"{self._who()} has spent {self.seconds:.1f} s on {self._rows_asked} states so far"
                                   f"{self._at(where)}: more than {SLOW_MS_PER_STATE:g} ms a state on average plus "
                                   f"{STALL_GRACE_S:g} s for the machine's own stalls ({allowed:.1f} s), where "
                                   f"validation allows 0.05 ms a state. It is slow on some of training's states. The "
                                   f"run stops; checkpoints already written are untouched.")

    def _check(self, w, b, states, where, rows_of):
        """Finite, bounded and (IGM gate) non-negative answers; the error names the earliest row of the request
        (`rows_of[i]`: the request's first row holding states[i]) that fails the first check it fails."""
        negative = (w < -GATE_TOLERANCE).any(axis=1) if self.igm_gate else np.zeros(len(w), bool)
        checks = ((~(np.isfinite(w).all(axis=1) & np.isfinite(b[:, 0])), "NaN or inf weights or bias"),
                  (~((np.abs(w) <= MAX_ABS_OUTPUT).all(axis=1) & (np.abs(b[:, 0]) <= MAX_ABS_OUTPUT)),
                   f"weights or bias beyond ±{MAX_ABS_OUTPUT:g} (Q_tot would overflow)"),
                  (negative, "negative weights with the IGM gate on"))
        bad, what = next(((bad, what) for bad, what in checks if bad.any()), (None, None))
        if bad is None:
            return
        failing = np.flatnonzero(bad)
        i = int(failing[np.argmin(rows_of[failing])])
        if what.startswith("negative"):
            what += f" (min {float(w[i].min()):.4g})"
        self.close()
        row = int(rows_of[i])
        state = np.array2string(states[i][:12], precision=4, separator=", ")
        more = " ..." if states.shape[1] > 12 else ""
        raise TFCAFWorkerError(f"{self._who()} returned {what} for state row {row}{self._at(where, row)}: "
                               f"state = {state}{more}; weights = {np.array2string(w[i], precision=4)}, bias = "
                               f"{float(b[i, 0]):.4g}. It passed validation, so it misbehaves only on some states, "
                               f"after some calls or with some other states in its batch. The run stops; "
                               f"checkpoints already written are untouched. Fix the function and validate it "
                               f"again.")

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
