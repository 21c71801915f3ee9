"""Moved to scripts/drop_episodes.py. The old path works for one release: `python src/drop_episodes.py ARGS` runs
`python scripts/drop_episodes.py ARGS` (same arguments, output and exit status)."""
import os
import sys

from utils.paths import REPO_ROOT

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, os.path.join(REPO_ROOT, "scripts", "drop_episodes.py"), *sys.argv[1:]])
