"""Temporary files and folders name their writer; a later run deletes those of dead writers only."""
import os
import subprocess
import sys

import pytest

from utils.files import (
    atomic_path,
    clean_stale_temps,
    is_temp,
    process_start,
    temp_path,
    write_json_atomic,
    writer_alive,
)


def dead_pid():
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_of(path, pid, start=None):
    """A temp name of `path` as process `pid` (started at `start`, default: its real start) would write it."""
    me = f"-{os.getpid()}-{process_start(os.getpid())}-"
    start = process_start(pid) if start is None else start
    return temp_path(path).replace(me, f"-{pid}-{start or 7}-")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_dead_writers_temps_are_removed_and_live_ones_kept(tmp_path):
    run = tmp_path / "models" / "run"
    run.mkdir(parents=True)
    dead_dir = temp_of(str(run / "305"), dead_pid())
    os.makedirs(dead_dir)
    open(os.path.join(dead_dir, "agent.th"), "wb").close()
    dead_file = temp_of(str(run / "config.json"), dead_pid())
    open(dead_file, "w").close()
    mine = temp_path(str(run / "155"))
    os.makedirs(mine)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child = temp_of(str(run / "5"), sleeper.pid)
        os.makedirs(child)
        # the PID of a live process whose start time differs: the PID was reused, the writer is dead
        reused = temp_of(str(run / "10"), sleeper.pid, start=1)
        os.makedirs(reused)
        (run / "305").mkdir()  # a finished checkpoint is never touched
        assert not writer_alive(dead_dir) and writer_alive(mine) and writer_alive(child) and not writer_alive(reused)
        assert clean_stale_temps(tmp_path / "models") == []  # depth 0: only the folder itself
        removed = clean_stale_temps(tmp_path / "models", depth=1)
        assert sorted(removed) == sorted([dead_dir, dead_file, reused])
        assert sorted(os.listdir(run)) == sorted(["305", os.path.basename(mine), os.path.basename(child)])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_other_hosts_and_old_names_are_left_alone(tmp_path):
    other = tmp_path / f"305.tmp-elsewhere-{dead_pid()}-5-0"
    old = tmp_path / "155.tmp"
    other.mkdir()
    old.mkdir()
    assert writer_alive(other) and is_temp(other) and is_temp(old)
    assert clean_stale_temps(tmp_path) == []
    assert not is_temp(tmp_path / "305") and not is_temp(tmp_path / "config.json")


def test_atomic_path_renames_when_complete_and_removes_on_error(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_path(str(target)) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "a"), "w").close()
        assert is_temp(tmp) and not target.exists()
    assert os.listdir(target) == ["a"]
    with atomic_path(str(target)) as tmp:  # an existing folder is replaced
        os.makedirs(tmp)
    assert os.listdir(target) == []
    with pytest.raises(KeyError):
        with atomic_path(str(target)) as tmp:
            os.makedirs(tmp)
            raise KeyError
    assert os.listdir(tmp_path) == ["ckpt"]
    write_json_atomic(str(tmp_path / "x.json"), {"a": 1})
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "x.json"]
