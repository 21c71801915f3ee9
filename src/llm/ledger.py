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


def save_ledger(run_dir, snapshot, **about):
    """<run_dir>/llm_ledger.json: `snapshot` (Ledger.snapshot) added to the ledger already there, `about` (backend,
    model) the latest. A folder may be shared by runs, as a labeler's results/labels/<fingerprint>/ is by every
    label_name of a dataset: the file totals them (`runs` counts them), as the transcript beside it lists all their
    calls. Each run's cost is its own prices'. The transcript (append-only, never replaced) is flocked while the
    file is read and renamed over, so runs closing at once do not drop each other's counts."""
    path = os.path.join(run_dir, "llm_ledger.json")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "llm_transcript.jsonl"), "a", encoding="utf-8") as lock:
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
        out = dict(snapshot, **about)
        for k, v in snapshot.items():
            prev = old.get(k)
            if k.startswith("price_") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(prev, (int, float)) and not isinstance(prev, bool):
                out[k] = round(prev + v, 6) if isinstance(v, float) or isinstance(prev, float) else prev + v
        if isinstance(old.get("server_models"), list):
            out["server_models"] = sorted(set(map(str, old["server_models"])) | set(snapshot["server_models"]))
        runs = old.get("runs")
        out["runs"] = (runs if isinstance(runs, int) and not isinstance(runs, bool) else len(old) > 0) + 1
        write_json_atomic(path, out)


class Transcript:
    """Appends one JSON line per chat() call to <run_dir>/llm_transcript.jsonl (no file when run_dir is None)."""

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, "llm_transcript.jsonl") if run_dir else None
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
