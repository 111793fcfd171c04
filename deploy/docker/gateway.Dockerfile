# syntax=docker/dockerfile:1
# The HTTP gateway and web page; build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t semsearch/gateway .
# It binds 0.0.0.0, so it needs GATEWAY_TOKEN (or GATEWAY_ALLOW_OPEN_WRITES=true) to start.
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

# The service's distributions at the versions of uv.lock, hash-checked (exported to requirements/gateway.txt;
# uvloop and httptools: uvicorn's fast event loop and HTTP parser, used when present).
FROM ${PYTHON_IMAGE} AS deps
COPY requirements/gateway.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes --only-binary :all: \
        -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
COPY --from=protos /src/protos /app/protos
COPY semsearch_common/ /app/semsearch_common/
COPY gateway/ /app/gateway/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
RUN python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "gateway"]
