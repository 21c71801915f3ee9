"""Moved to scripts/plot.py. The old path works for one release: `python src/plot.py ARGS` runs
`python scripts/plot.py ARGS` (same arguments, output and exit status)."""
import os
import sys

from utils.paths import REPO_ROOT

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, os.path.join(REPO_ROOT, "scripts", "plot.py"), *sys.argv[1:]])
