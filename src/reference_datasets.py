"""Moved to scripts/reference_datasets.py. The old path works for one release: `python src/reference_datasets.py
ARGS` runs `python scripts/reference_datasets.py ARGS` (same arguments, output and exit status)."""
import os
import sys

from utils.paths import REPO_ROOT

if __name__ == "__main__":
    script = os.path.join(REPO_ROOT, "scripts", "reference_datasets.py")
    os.execv(sys.executable, [sys.executable, script, *sys.argv[1:]])
