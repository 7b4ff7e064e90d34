# syntax=docker/dockerfile:1.7
# RunPod Serverless worker: vLLM (CUDA build) serving one model across all GPUs of the pod.
#
#   docker build -t you/worker-vllm-tp:1 .                       # the model is downloaded at first start
#   HF_TOKEN=hf_... docker build -t you/worker-vllm-tp:qwen3-8b \
#       --build-arg MODEL_NAME=Qwen/Qwen3-8B \
#       --secret id=hf_token,env=HF_TOKEN .                      # the model is baked into the image
#
# Layers, slowest-changing first: OS packages, vLLM (+ torch and its CUDA libraries), the other
# requirements, the baked model (only the download code is copied before it), then the worker code.

# vLLM 0.32.0 pins torch 2.13.0, whose PyPI wheels carry their own CUDA 13.0 libraries: the base
# image only needs the driver hooks. Hosts need a driver for CUDA >= 13.0 (hub.json allowedCudaVersions).
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

FROM ${CUDA_IMAGE}

# The CUDA apt packages of the same major.minor as the base image (nvcc for run-time kernel builds).
ARG CUDA_PKG=13-0
# The GPU build of the vLLM version the CPU tests use (tests/test_deploy.py keeps the pins equal).
ARG VLLM_VERSION=0.32.0

# python3.12-dev + gcc: Triton builds its launcher against Python.h at run time.
# g++ + cuda-nvcc + cudart-dev: FlashInfer and DeepGEMM compile some kernels at first use (JIT).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates \
        python3.12 python3.12-venv python3.12-dev \
        gcc g++ \
        "cuda-nvcc-${CUDA_PKG}" "cuda-cudart-dev-${CUDA_PKG}" \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_DISABLE_TELEMETRY=1

# The biggest layer (vLLM, torch, CUDA libraries: ~9 GB) on its own, so requirement or code changes
# reuse it; the pip cache mount keeps wheels out of the layer and across rebuilds.
RUN --mount=type=cache,target=/root/.cache/pip \
    python3.12 -m venv "$VIRTUAL_ENV" \
    && pip install "vllm==${VLLM_VERSION}"

WORKDIR /app
COPY requirements.txt constraints.txt ./
# Naming vllm again makes a VLLM_VERSION that differs from requirements.txt fail here, loudly,
# instead of silently reinstalling the pinned version over the first layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r requirements.txt -c constraints.txt "vllm==${VLLM_VERSION}"

# Optional baked model: the same download code the worker runs at start (worker/model_files/), into
# /opt/worker/baked-model. HF_TOKEN comes only as a BuildKit secret file, never an ARG or ENV.
COPY config/ config/
COPY worker/__init__.py worker/logs.py worker/
COPY worker/model_files/ worker/model_files/
ARG MODEL_NAME=""
ARG MODEL_REVISION=""
RUN --mount=type=secret,id=hf_token,required=false \
    if [ -n "$MODEL_NAME" ]; then python -m worker.model_files.download --bake; fi
# The baked model is also the default MODEL_NAME (an endpoint env var still overrides it); its
# revision is in the manifest, so MODEL_REVISION stays unset.
ENV MODEL_NAME=${MODEL_NAME}

COPY handler.py test_input.json ./
COPY worker/ worker/

# Root by default: RunPod mounts the network volume (/runpod-volume, the shared model cache) owned by
# root, so a non-root user cannot write it. Without a network volume, build with
# --build-arg WORKER_USER=worker to run unprivileged (models are then cached in /home/worker).
RUN useradd --no-log-init --create-home --uid 10001 --shell /usr/sbin/nologin worker
ARG WORKER_USER=root
USER ${WORKER_USER}

CMD ["python", "-u", "handler.py"]
