"""Parent side of the TFCAF sandbox processes (the validator child and the training worker): start one with
`python -I` in a fresh empty directory with an environment that holds no secrets, in its own session, and
kill its whole process group when done. The child confines itself (qllm.confine) before running any TFCAF code.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from utils.paths import SRC_DIR
from utils.text import printable


def child_env(workdir):
    """A minimal environment: no API keys or other secrets of the parent."""
    env = {"PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    if os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


def spawn(boot_code, stderr=subprocess.PIPE):
    """(Popen, workdir) of `python -I -c "<sys.path setup>; boot_code"` with pipes on stdin and stdout."""
    workdir = tempfile.mkdtemp(prefix="tfcaf_sandbox_")
    code = f"import sys; sys.path.insert(0, sys.argv[1]); {boot_code}"
    proc = subprocess.Popen([sys.executable, "-I", "-c", code, SRC_DIR], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=stderr, cwd=workdir, env=child_env(workdir),
                            start_new_session=True, close_fds=True)
    return proc, workdir


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass


def leftovers(workdir):
    out = []
    for root, dirs, files in os.walk(workdir):
        out += [os.path.relpath(os.path.join(root, f), workdir) for f in files + dirs]
    return sorted(out)


def remove_workdir(workdir):
    shutil.rmtree(workdir, ignore_errors=True)


def clean_text(text, limit=1000):
    """Text that came out of a sandbox process, safe to log: no host paths (base names kept), no control
    characters or terminal escapes (utils.text.printable), newlines shown as ' | ', at most `limit` characters."""
    from qllm.sandbox_child import scrub

    return scrub(printable(str(text).replace("\r", ""), newlines=False), limit)
