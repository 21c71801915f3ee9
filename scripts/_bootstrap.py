"""The one bootstrap for the command-line tools in scripts/: `import _bootstrap` first puts src/ on sys.path, so
`python scripts/NAME.py` imports the project's packages like `python src/main.py` does. No other file patches
sys.path."""
import os
import sys

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
