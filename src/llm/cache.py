"""Content-addressed disk cache of chat completions: one JSON file per (request, sample index).

Key = SHA-256 of the canonical JSON of {model, messages, temperature, max_tokens, top_p, seed, sample_index}
(plus a schema version). The backend and the server URL are not part of the key, so `replay` reads what
`openai` or `local` wrote for the same model name. Files live at `<cache_dir>/<key[:2]>/<key>.json`.
Writes go to a temporary file in the same folder that is renamed over the target, so an interrupted run
never leaves a half-written entry; an unreadable entry is reported, counted and treated as missing.

Claims (`claim` / `release`): before asking the backend for a missing entry a process creates
`<key>.json.claim` (O_EXCL: one process wins). Another run that needs the same entry meanwhile waits for it
instead of paying for it too (llm.client); so does another thread of the same process (chat_many asking one request
twice). A claim whose process is gone (same host and pid namespace: its pid no longer runs; another host or
container: older than CLAIM_TTL_S) is stale and taken over.
"""
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time

from utils.files import write_json_atomic

SCHEMA = 1
CLAIM_TTL_S = 3600  # a claim by another host is trusted this long (its pid cannot be checked from here)


def _pid_space():
    """This machine's boot and pid namespace: a pid means the same process only where both match (containers with
    host networking share the hostname, not the pids)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


PID_SPACE = _pid_space()


def claimant():
    """Who holds a claim made here: this thread of this process, on this host and pid namespace."""
    return {"pid": os.getpid(), "thread": threading.get_ident(), "host": socket.gethostname(), "space": PID_SPACE}
log = logging.getLogger("llm.cache")


def mine_suffix():
    """A file-name suffix unique to this process and thread (host, pid, thread id)."""
    c = claimant()
    return f"{c['host']}.{c['pid']}.{c['thread']}"


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def request_identity(model, messages, temperature, max_tokens, top_p=None, seed=None, response_format=None):
    """The sampling-relevant part of a request (without the sample index), normalised for hashing. Optional parts
    enter only when set, so the keys of requests without them stay what they were."""
    ident = {"model": model, "messages": messages,
             "temperature": None if temperature is None else float(temperature),
             "max_tokens": None if max_tokens is None else int(max_tokens)}
    if top_p is not None:
        ident["top_p"] = float(top_p)
    if seed is not None:
        ident["seed"] = int(seed)
    if response_format is not None:
        ident["response_format"] = response_format
    return ident


def cache_key(identity, sample_index):
    payload = dict(identity, sample_index=int(sample_index), schema=SCHEMA)
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class DiskCache:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self._unreadable = set()  # paths of the entries found unreadable so far

    def path(self, key):
        return os.path.join(self.root, key[:2], key + ".json")

    def check_writable(self):
        """Raise OSError unless entries can be written under the root (made if missing): checked before the first
        request, so an unusable llm.cache_dir fails before anything is paid for."""
        os.makedirs(self.root, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=self.root, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)

    def get(self, key):
        """The stored entry (dict with at least `text`) or None when absent or unreadable."""
        path = self.path(key)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            return self._corrupt(path, f"{type(e).__name__}: {e}")
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("text"), str):
            return self._corrupt(path, "not a cache entry for this key")
        return entry

    @property
    def corrupt(self):
        """How many entries were found unreadable so far (each once, however often it is read)."""
        return len(self._unreadable)

    def _corrupt(self, path, why):
        if path in self._unreadable:
            return None
        self._unreadable.add(path)
        log.warning(f"LLM cache: ignoring unreadable entry {path} ({why}); it is overwritten when re-requested")
        return None

    def claim(self, key):
        """True when this process now holds the claim on `key` (or already did); False while another live process
        holds it. A stale claim (module doc) is taken over. Any OSError (a read-only or full cache): True, so the
        request goes ahead as without claims."""
        path = self.path(key) + ".claim"
        mine = claimant()
        for _ in range(2):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder(path)
                if holder == mine:
                    return True
                if holder is not None and not self._stale(path, holder) or holder is None and self._fresh(path):
                    return False  # held; or just created and not written yet
                taken = self._take_over(path, holder)  # stale, or unreadable for seconds
                if taken is None:
                    return True
                if not taken:
                    return False
                continue
            except OSError:
                return True
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(mine, f)
            except OSError:  # a full disk: no claim (asked as without claims), no empty claim file left behind
                try:
                    os.unlink(path)
                except OSError:
                    pass
            return True
        return False  # another process took it over between our unlink and our create

    def _take_over(self, path, stale):
        """Remove the claim file at `path` if it still holds `stale` (the holder judged stale; None: unreadable).
        Renamed aside first, then read: of two waiters that judged the same claim stale, the second would otherwise
        delete the claim the first has just made, and both would pay. True: removed; False: it held another claim
        by now (put back unless a newer one is there); None: the cache cannot be written (asked without claims)."""
        aside = f"{path}.{mine_suffix()}.stale"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True  # removed meanwhile: try to create ours
        except OSError:
            return None
        # an unreadable claim counts as the stale one only while it is old: a fresh one was just created, not written
        mistaken = self._holder(aside) != stale or (stale is None and self._fresh(aside))
        if mistaken:
            try:  # another waiter's fresh claim: back in its place (an even newer claim there wins)
                os.link(aside, path)
            except OSError:
                pass
        try:
            os.unlink(aside)
        except OSError:
            pass
        return not mistaken

    def release(self, key):
        """Drop this process's claim on `key` (after the entry is written, or the request failed)."""
        path = self.path(key) + ".claim"
        if self._holder(path) == claimant():
            try:
                os.unlink(path)
            except OSError:
                pass

    def claimed_by_other(self, key):
        """Whether a live process other than this one holds the claim on `key`."""
        path = self.path(key) + ".claim"
        holder = self._holder(path)
        return holder is not None and holder != claimant() and not self._stale(path, holder)

    @staticmethod
    def _holder(path):
        try:
            with open(path, encoding="utf-8") as f:
                holder = json.load(f)
        except (OSError, ValueError):
            return None
        return {k: holder.get(k) for k in ("pid", "thread", "host", "space")} if isinstance(holder, dict) else None

    @staticmethod
    def _fresh(path, seconds=10):
        try:
            return time.time() - os.path.getmtime(path) < seconds
        except OSError:
            return False

    @staticmethod
    def _stale(path, holder):
        if holder["host"] == socket.gethostname() and holder["space"] == PID_SPACE:
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, TypeError, ValueError, OverflowError):
                return False
            return False
        try:
            return time.time() - os.path.getmtime(path) > CLAIM_TTL_S
        except OSError:
            return True

    def put(self, key, entry):
        write_json_atomic(self.path(key), dict(entry, key=key, schema=SCHEMA, created=time.time()))
