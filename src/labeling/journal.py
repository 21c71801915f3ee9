"""An append-only JSONL journal of answered items, so a rerun asks only the missing ones.

One line per item once its answer is final (parsed, tie, or unparsed after the re-ask): {"item", "request", "answer",
...}. `request` is a hash of everything that decides the answer (model, sampling, the full messages of every order);
a line counts on resume only when it matches the item's request now, so changing the model, a prompt, the summary
length or swap_order re-asks instead of reusing stale answers. Each line is flushed and fsynced before the next
item, so a killed process loses at most the items in flight; a torn last line is skipped on reading. Items that
failed (timeouts, HTTP errors after the retries, a budget stop) are not journaled: a rerun asks them again.
"""
import json
import logging
import os

log = logging.getLogger("labeling")


class Journal:
    def __init__(self, path):
        self.path = path
        self._f = None

    def read(self):
        """{item id: the last line written for it}; unreadable lines (a torn write) are skipped."""
        out, bad = {}, 0
        if not os.path.exists(self.path):
            return out
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                    out[entry["item"]] = entry
                except (ValueError, KeyError, TypeError):
                    bad += 1
        if bad:
            log.warning(f"label journal {self.path}: skipped {bad} unreadable line(s) (a write cut by a kill)")
        return out

    def append(self, entry):
        if self._f is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            torn = os.path.exists(self.path) and os.path.getsize(self.path) > 0 and not _ends_with_newline(self.path)
            self._f = open(self.path, "a", encoding="utf-8")
            if torn:  # a kill cut the last line: start a new one, so the torn one stays the only unreadable line
                self._f.write("\n")
        self._f.write(json.dumps(entry, ensure_ascii=False, allow_nan=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None


def _ends_with_newline(path):
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
