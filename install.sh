#!/usr/bin/env bash
# One-step set-up: a virtualenv in .venv with the pinned dependencies (CPU build of torch).
# Usage: ./install.sh            (PYTHON=/path/to/python3.11 ./install.sh to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -m venv .venv
# torch first and on its own: the exact pin selects the CPU wheel instead of a CUDA build
.venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -r requirements.txt
echo "Installed into .venv. Try: .venv/bin/python src/main.py --config=mappo --env-config=lbf"
