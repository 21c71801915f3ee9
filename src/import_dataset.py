"""Moved to scripts/import_dataset.py. The old path works for one release: `python src/import_dataset.py ARGS` runs
`python scripts/import_dataset.py ARGS` (same arguments, output and exit status)."""
import os
import sys

from utils.paths import REPO_ROOT

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, os.path.join(REPO_ROOT, "scripts", "import_dataset.py"), *sys.argv[1:]])
