# syntax=docker/dockerfile:1
# The batch loader (a one-shot command); build from the repository root:
#   docker build -f deploy/docker/loader.Dockerfile -t semsearch/loader .
#   docker run --rm semsearch/loader dir /images --embedder HOST:50051 --index HOST:50052
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

# The service's distributions at the versions of uv.lock, hash-checked (exported to requirements/loader.txt).
FROM ${PYTHON_IMAGE} AS deps
COPY requirements/loader.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --only-binary :all: \
        -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /datasets && chown app:app /datasets
COPY --from=deps /opt/venv /opt/venv
COPY --from=protos /src/protos /app/protos
COPY semsearch_common/ /app/semsearch_common/
COPY loader/ /app/loader/
RUN python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["python", "-m", "loader"]
CMD ["--help"]
