# syntax=docker/dockerfile:1
# The batch loader (a one-shot command); build from the repository root:
#   docker build -f deploy/docker/loader.Dockerfile -t semsearch/loader .
#   docker run --rm semsearch/loader dir /images --embedder HOST:50051 --index HOST:50052
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Generated protobuf code; grpcio-tools stays in this stage.
FROM ${PYTHON_IMAGE} AS protos
RUN pip install --no-cache-dir --disable-pip-version-check grpcio-tools==1.85.1 "googleapis-common-protos>=1.65"
WORKDIR /src
COPY protos/ protos/
RUN python -m protos.generate

# Only the distributions this command imports (tqdm: the progress bar on a terminal; grpcio-health-checking
# and prometheus-client: semsearch_common's channels and process modules).
FROM ${PYTHON_IMAGE} AS deps
WORKDIR /src
COPY pyproject.toml deploy/docker/pick_requirements.py ./
RUN python pick_requirements.py grpcio grpcio-health-checking prometheus-client protobuf googleapis-common-protos grpcio-status Pillow tqdm > requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

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
