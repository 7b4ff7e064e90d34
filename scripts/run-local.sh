#!/usr/bin/env bash
# Sets up .venv, makes the tiny test model, and runs the worker once in RunPod local test mode
# (test_input.json, or pass --test_input '{"input": {...}}').
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m worker.tiny_model .models/tiny-llama >/dev/null
export HF_HUB_OFFLINE=1
export MODEL_NAME="${MODEL_NAME:-.models/tiny-llama}"
# Small and quick on a CPU: a 1 GiB KV cache, no graph compilation.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export ENFORCE_EAGER="${ENFORCE_EAGER:-true}"
export TORCHDYNAMO_DISABLE="${TORCHDYNAMO_DISABLE:-1}"
exec .venv/bin/python handler.py "$@"
