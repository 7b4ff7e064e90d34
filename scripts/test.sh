#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite on the real (CPU) vLLM engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
