# syntax=docker/dockerfile:1
# The embedder on NVIDIA GPUs: CUDA 12 + cuDNN 9 runtime, onnxruntime-gpu; build from the repository root:
#   docker build -f deploy/docker/embedder-gpu.Dockerfile -t semsearch/embedder-gpu .
# Ubuntu 24.04's Python is 3.12 (the project needs >= 3.11).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# Generated protobuf code (pure Python); grpcio-tools stays in this stage.
FROM ${PYTHON_IMAGE} AS protos
WORKDIR /src
COPY protos/ protos/
# In a venv: Debian's own Python refuses system-wide pip installs (PEP 668).
RUN python -m venv /tmp/tools \
    && /tmp/tools/bin/pip install --no-cache-dir --disable-pip-version-check grpcio-tools==1.85.1 \
        "googleapis-common-protos>=1.65" \
    && /tmp/tools/bin/python -m protos.generate

FROM ${CUDA_IMAGE} AS deps
# onnxruntime-gpu on PyPI: 1.23.2 is built for CUDA 12.2 + cuDNN 9, 1.24.4 for CUDA 12.8 (needs a 12.8 base),
# 1.31.1 for CUDA 13.0, which this base image does not have. The check below fails the build on a mismatch.
ARG ORT_GPU_VERSION=1.23.2
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/embedder-gpu.txt /tmp/requirements.txt
# The lock's distributions without any ONNX Runtime (hash-checked), then the CUDA 12 build of onnxruntime-gpu.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --only-binary :all: \
        -r /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary :all: \
        "onnxruntime-gpu==${ORT_GPU_VERSION}" \
    && /opt/venv/bin/python -c "from onnxruntime.capi import build_and_package_info as b; \
import sys; sys.exit(0 if b.cuda_version.startswith('12.') else \
f'onnxruntime-gpu {b.__version__} is built for CUDA {b.cuda_version}; this image has CUDA 12')"

FROM ${CUDA_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /models && chown app:app /models
COPY --from=deps /opt/venv /opt/venv
COPY --from=protos /src/protos /app/protos
COPY semsearch_common/ /app/semsearch_common/
COPY embedder_service/ /app/embedder_service/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
RUN python3 -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/models/.huggingface \
    EMBEDDER_HOST=0.0.0.0 \
    EMBEDDER_PORT=50051 \
    EMBEDDER_PROVIDER=cuda
WORKDIR /app
USER 10001:10001
EXPOSE 50051
CMD ["python", "-m", "embedder_service"]
