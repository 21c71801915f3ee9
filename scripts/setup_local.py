"""Fetch the local LLM (Qwen2.5-Coder-1.5B GGUF, SHA-256 checked) and install its runtime: what `./install.sh llm`
runs. Options: --dest PATH, --no-runtime, --python INTERPRETER (see src/llm/setup_local.py)."""
import sys

import _bootstrap  # noqa: F401

from llm.setup_local import main

if __name__ == "__main__":
    sys.exit(main())
