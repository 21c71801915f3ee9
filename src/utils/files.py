"""Writing files and folders so that a crash never leaves a half-written one that looks complete.

Everything is written under a temporary name next to its final path and renamed when complete. The
temporary name says who writes it, `<final>.tmp-<host>-<pid>-<start>-<n>` (`start`: the writer's start time
from /proc, so a reused PID is not mistaken for the writer), so that a later run can delete the litter
of writers that died (clean_stale_temps) without touching files that a live run is still writing.
"""
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
from contextlib import contextmanager

TEMP = re.compile(r"\.tmp-(?P<host>.+)-(?P<pid>\d+)-(?P<start>\d+)-\d+$")
LEGACY_TEMP = re.compile(r"(\.tmp$|^\.tmp-)")  # written before temps named their writer: never loaded
_count = itertools.count()


def process_start(pid):
    """Start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field 22); 0 without /proc,
    None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])  # fields after the command name start at 3
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else 0
    except (OSError, ValueError, IndexError):
        return None


def _host():
    """The host, and the PID namespace where there is one (containers sharing a host name and a folder)."""
    try:
        ns = "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    except OSError:
        ns = ""
    return (socket.gethostname() or "localhost").replace(os.sep, "_") + (f"_{ns}" if ns else "")


def temp_path(path):
    """A fresh temporary name next to `path`, naming this process as its writer. Nothing is created."""
    pid = os.getpid()
    return f"{os.fspath(path)}.tmp-{_host()}-{pid}-{process_start(pid) or 0}-{next(_count)}"


def is_temp(path):
    """Whether `path` is an unfinished write (a temp of temp_path, or an older `.tmp` name): never load it."""
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    return bool(TEMP.search(name) or LEGACY_TEMP.search(name))


def writer_alive(path):
    """Whether the process that writes temp `path` may still be running. Temps of other hosts (shared
    folders) and older names without a writer count as alive: there is no way to tell."""
    m = TEMP.search(os.path.basename(os.path.normpath(os.fspath(path))))
    if m is None or m["host"] != _host():
        return True
    start = process_start(int(m["pid"]))
    if start is None:
        return False
    if start == 0 or int(m["start"]) == 0:  # no /proc: PID reuse cannot be told apart
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return start == int(m["start"])


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def clean_stale_temps(folder, depth=0):
    """Delete the temps in `folder` (and `depth` levels of sub-folders) whose writer is dead; returns them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if TEMP.search(entry.name):
            if not writer_alive(entry.path):
                remove(entry.path)
                removed.append(entry.path)
        elif depth > 0 and entry.is_dir(follow_symlinks=False):
            removed += clean_stale_temps(entry.path, depth - 1)
    return removed


@contextmanager
def atomic_path(path):
    """Yields a temporary path to write a file or a folder at; renamed to `path` when the block completes,
    deleted if it raises. An existing folder at `path` is replaced."""
    tmp = temp_path(path)
    try:
        yield tmp
        if os.path.isdir(tmp) and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def write_text_atomic(path, text, fsync=True):
    """Write text to a temporary file next to `path` and rename it over `path` (readers see old or new)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        # created by open(): mode 0o666 & ~umask, as a plain open(path, "w") would give (no chmod)


def read_json(path):
    """(the JSON in the file at `path`, None), or (None, why it cannot be read: "missing", or the error)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as e:  # truncated (killed mid-write, or being written), not UTF-8, unreadable
        return None, str(e)


def load_json(path):
    """The JSON in the file at `path`, or None where it cannot be read (read_json says why)."""
    return read_json(path)[0]


def write_json_atomic(path, obj, fsync=True, allow_nan=True):
    """`obj` as JSON at `path`, atomically; allow_nan=False: strict JSON (a NaN or inf raises, `path` untouched)."""
    text = json.dumps(obj, ensure_ascii=False, indent=1, default=str, allow_nan=allow_nan)
    write_text_atomic(path, text, fsync=fsync)


def sha256_bytes(data):
    """Hex SHA-256 of bytes or text (UTF-8): the one hash the project records for files and sources."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def sha256_file(path, block=1 << 23):
    """Hex SHA-256 of a file's content, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


class FolderLock:
    """An exclusive advisory lock (flock) on a folder itself, held by the one process that writes into it (a run's
    model folder, a sweep's folder); no file is created. The kernel releases it when the process dies, even by
    kill -9, so a stale lock cannot block anyone; a live writer is never joined by a second one."""

    def __init__(self, fd, folder):
        self.fd, self.folder = fd, folder

    @classmethod
    def try_acquire(cls, folder):
        """The lock, or None when another process (or another open of this one) holds it."""
        import fcntl

        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(fd, folder)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __deepcopy__(self, memo):  # a process's lock is not data: copies (e.g. of a config holding it) share it
        return self

    def __del__(self):
        self.release()


def remove_empty_dirs(folder, stop=None):
    """Remove `folder` if it is empty, then the folders above it up to (not including) `stop` while they are empty;
    never raises (another process may be filling one of them right now: then it stays)."""
    folder = os.path.abspath(folder)
    stop = os.path.abspath(stop) if stop else None
    while True:
        try:
            os.rmdir(folder)  # only if empty
        except OSError:
            return
        folder = os.path.dirname(folder)
        if stop is None or not folder.startswith(stop + os.sep):
            return
