# syntax=docker/dockerfile:1
# The embedder on CPUs (onnxruntime); build from the repository root:
#   docker build -f deploy/docker/embedder.Dockerfile -t semsearch/embedder .
# The same image runs the model CLI (`python -m embedder_service.models obtain hub --cache /models`).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Generated protobuf code; grpcio-tools stays in this stage.
FROM ${PYTHON_IMAGE} AS protos
WORKDIR /src
COPY protos/ protos/
# In a venv: Debian's own Python refuses system-wide pip installs (PEP 668).
RUN python -m venv /tmp/tools \
    && /tmp/tools/bin/pip install --no-cache-dir --disable-pip-version-check grpcio-tools==1.85.1 \
        "googleapis-common-protos>=1.65" \
    && /tmp/tools/bin/python -m protos.generate

# The service's distributions at the versions of uv.lock, hash-checked (exported to requirements/embedder.txt;
# onnxruntime there is the CPU build on every platform).
FROM ${PYTHON_IMAGE} AS deps
COPY requirements/embedder.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --only-binary :all: \
        -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /models && chown app:app /models
COPY --from=deps /opt/venv /opt/venv
COPY --from=protos /src/protos /app/protos
COPY semsearch_common/ /app/semsearch_common/
COPY embedder_service/ /app/embedder_service/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
RUN python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/models/.huggingface \
    EMBEDDER_HOST=0.0.0.0 \
    EMBEDDER_PORT=50051 \
    EMBEDDER_PROVIDER=cpu
WORKDIR /app
USER 10001:10001
EXPOSE 50051
CMD ["python", "-m", "embedder_service"]
