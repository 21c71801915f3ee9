"""Parallel-runner workers never outlive a main process killed with SIGKILL."""
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def children(pid):
    found = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        if int(fields[1]) == pid:
            found.append(int(d))
    return found


def alive(pid):
    """Running, i.e. neither gone nor a zombie waiting for a reaper that is not ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_and_watch(cmd, n_workers, tmp_path, env=None):
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)
    workers = []
    try:
        deadline = time.time() + 90
        while len(workers) < n_workers:
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-2000:]
            assert time.time() < deadline, "the workers never started"
            time.sleep(0.2)
            workers = children(proc.pid)
        time.sleep(1.0)  # let the run reach its training loop
        proc.kill()
        proc.wait()
        deadline = time.time() + 30  # a worker still importing torch on a loaded machine exits when it gets there
        while any(alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if alive(w)], "workers outlived their parent"
    finally:
        proc.kill()
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_a_real_run_is_killed(tmp_path):
    cmd = [sys.executable, "src/main.py", "--config=qmix", "--env-config=matrix_game", "with", "runner=parallel",
           "batch_size_run=3", "n_workers=2", "t_max=100000000", f"local_results_path={tmp_path}",
           "use_tensorboard=False", "save_model=False"]
    kill_and_watch(cmd, 2, tmp_path)


DRIVER = """
import sys, time
import runners.parallel_runner as pr
from envs.matrix_game import MatrixGame
if sys.argv[1] == "eof":
    pr.exit_with_parent = lambda pid: None  # no parent-death signal: only end-of-file on the pipe remains
else:
    MatrixGame.fork_safe = False  # spawned workers, as SMAX's
from helpers import make_ctx
ctx = make_ctx("qmix", "matrix_game", runner="parallel", batch_size_run=3, n_workers=2)
ctx.runner.run()
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("mode", ["eof", "spawn"])
def test_workers_exit_on_end_of_file_alone_and_when_spawned(tmp_path, mode):
    """eof: without the signal, forked workers still see EOF, as they closed their copies of the parent's pipe
    ends; spawn: spawned workers get the signal too."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), os.path.join(ROOT, "tests")]))
    kill_and_watch([sys.executable, "-c", DRIVER, mode], 2, tmp_path, env)


def _slow_closing_worker(parent_pid, conn):
    from runners.parallel_runner import exit_with_parent

    exit_with_parent(parent_pid)
    conn.recv()  # "close"
    time.sleep(60)  # an env.close() that outlasts close_workers' 5 s wait


def test_a_worker_still_closing_after_5_s_is_killed_not_waited_for():
    """Review finding: such a worker ignores multiprocessing's SIGTERM at exit while its parent lives (a group SIGTERM
    is the parent's to take), so the parent's exit waited for its whole close."""
    import multiprocessing

    from runners.parallel_runner import close_workers

    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=_slow_closing_worker, args=(os.getpid(), theirs), daemon=True)
    p.start()
    t0 = time.monotonic()
    close_workers([ours], [p])
    assert not p.is_alive() and time.monotonic() - t0 < 15
