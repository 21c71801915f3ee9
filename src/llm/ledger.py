"""Token/cost ledger and the run's JSONL transcript of LLM calls (thread-safe; never holds an API key)."""
import fcntl
import json
import logging
import math
import os
import threading
import time
from datetime import datetime, timezone

from utils.files import write_json_atomic

log = logging.getLogger("llm")


def estimate_tokens(text):
    """Fallback when a server reports no usage: about 4 characters per token."""
    return math.ceil(len(text) / 4) if text else 0


def messages_text(messages):
    parts = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):  # content parts
            parts.extend(p.get("text", "") for p in c if isinstance(p, dict))
    return "\n".join(parts)


TRANSCRIPT = "llm_transcript.jsonl"
LEDGER = "llm_ledger.json"


class Ledger:
    FIELDS = ("calls", "samples", "cache_hits", "cache_misses", "cache_corrupt", "requests", "attempts", "retries",
              "errors", "prompt_tokens", "completion_tokens", "estimated_requests", "latency_s")

    def __init__(self, price_in_per_m=0.0, price_out_per_m=0.0):
        self.price_in, self.price_out = float(price_in_per_m), float(price_out_per_m)
        self._lock = threading.Lock()
        self._c = dict.fromkeys(self.FIELDS, 0)
        self._c["latency_s"] = 0.0
        self._models = set()

    def add(self, **counts):
        with self._lock:
            for k, v in counts.items():
                self._c[k] += v

    def saw_model(self, name):
        """A model name a server reported answering with (its `model` field: provenance, which can differ from
        llm.model, e.g. a dated snapshot behind an alias)."""
        with self._lock:
            self._models.add(str(name))

    def snapshot(self):
        with self._lock:
            out = dict(self._c)
            out["server_models"] = sorted(self._models)
        out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
        out["cost_usd"] = (out["prompt_tokens"] * self.price_in + out["completion_tokens"] * self.price_out) / 1e6
        out["latency_s"] = round(out["latency_s"], 3)
        out["price_in_per_m"], out["price_out_per_m"] = self.price_in, self.price_out
        return out


SUMMED = (*Ledger.FIELDS, "total_tokens", "cost_usd")  # what save_ledger adds up; the rest is the latest run's


def save_ledger(run_dir, snapshot, backend, model):
    """<run_dir>/llm_ledger.json: `snapshot` (Ledger.snapshot) added to the ledger already there (the counters of
    SUMMED; a field only the old file has is kept), `backend`, `model` and the prices the latest, `models` every
    llm.model that wrote there (one labels folder may mix them). A folder may be shared by runs, as a labeler's
    results/labels/<fingerprint>/ is by every label_name of a dataset: the file totals them (`runs` counts them), as
    the transcript beside it lists all their calls. Each run's cost is its own prices'. The transcript (append-only,
    never replaced) is flocked while the file is read and renamed over, so runs closing at once do not drop each
    other's counts; a run that made no call and finds no transcript (no run there made one) writes nothing."""
    path = os.path.join(run_dir, LEDGER)
    flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT if snapshot["calls"] else 0)  # no empty transcript
    if snapshot["calls"]:
        os.makedirs(run_dir, exist_ok=True)
    try:
        fd = os.open(os.path.join(run_dir, TRANSCRIPT), flags, 0o644)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "a", encoding="utf-8") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except FileNotFoundError:
            old = {}
        except (OSError, ValueError) as e:
            log.warning(f"{path} is unreadable ({e}); it is replaced by this run's ledger alone")
            old = {}
        if not isinstance(old, dict):
            old = {}
        out = dict(old, **snapshot, backend=backend, model=model)
        for k in SUMMED:
            prev, v = old.get(k), snapshot[k]
            if isinstance(prev, (int, float)) and not isinstance(prev, bool):
                out[k] = round(prev + v, 6) if isinstance(v, float) or isinstance(prev, float) else prev + v
        out["server_models"] = _union(old.get("server_models"), snapshot["server_models"])
        out["models"] = _union(old.get("models", [old.get("model")]), [model])
        runs = old.get("runs")
        out["runs"] = (runs if isinstance(runs, int) and not isinstance(runs, bool) else len(old) > 0) + 1
        write_json_atomic(path, out)


def _union(old, new):
    """The sorted names of list `old` (a ledger file's: anything) and `new`."""
    old = old if isinstance(old, list) else []
    return sorted({str(m) for m in old + list(new) if m is not None})


class Transcript:
    """Appends one JSON line per chat() call to <run_dir>/llm_transcript.jsonl (TRANSCRIPT; no file when run_dir is
    None)."""

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, TRANSCRIPT) if run_dir else None
        self._lock = threading.Lock()
        if self.path:
            os.makedirs(run_dir, exist_ok=True)

    def write(self, record):
        if not self.path:
            return
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


def now():
    return time.monotonic()
