#!/usr/bin/env bash
# Set up .venv and run the whole test suite (no GPU, no network; tests marked gpu skip without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hadolint docker/Dockerfile docker/Dockerfile.hf
.venv/bin/python -m pytest -q "$@"
