"""Real services for the loader tests: the tiny-model embedder and the index on an embedded Postgres."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from embedder_service.config import EmbedderConfig
from embedder_service.engine import Engine
from embedder_service.model import ClipModel
from embedder_service.models import bundle
from embedder_service.server import create_server as create_embedder
from index_service.config import Config as IndexConfig
from index_service.pg import EmbeddedPostgres
from index_service.server import Deps
from index_service.server import serve as serve_index
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common.channels import wait_serving
from semsearch_common.server import Server
from tests.support.pg import create_database, scratch_postgres

REPO = Path(__file__).resolve().parents[2]
# The test cluster needs no crash safety of its own; what the tests check is the loader's.
FAST_PG = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off", "max_connections": "200"}


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    """One embedded Postgres for the session."""
    with scratch_postgres("loader-tests-pg-", FAST_PG) as server:
        yield server


@dataclass
class IndexServer:
    """An in-process index service on its own fresh database."""

    addr: str
    stub: index_pb2_grpc.IndexStub
    server: Server
    deps: Deps
    channel: grpc.Channel
    dsn: str

    def count(self) -> int:
        """Rows stored."""
        return self.stub.Stats(index_pb2.StatsRequest(), timeout=10).count

    def labels(self) -> dict[str, int]:
        """Rows per label."""
        return {lc.label: lc.count for lc in self.stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=10).labels}

    def metas(self) -> list[index_pb2.ImageMeta]:
        """Metadata of every row (ids are dense from 1 in a fresh database; gaps are fine)."""
        top = 10_000
        return list(self.stub.Get(index_pb2.GetRequest(ids=range(1, top)), timeout=30).images) \
            if self.count() else []


def start_index(pg: EmbeddedPostgres, data_dir: Path, dsn: str | None = None, port: int = 0,
                **overrides: object) -> IndexServer:
    """An index server, SERVING, over dsn (default: a new database on pg) and data_dir."""
    config = IndexConfig(host="127.0.0.1", port=port, dsn=dsn or create_database(pg), data_dir=data_dir,
                         health_interval_s=0.2, grace_s=0.5, **overrides)  # type: ignore[arg-type]
    deps = Deps.build(config, config.dsn or "")
    server = serve_index(config, deps)
    port = server.port
    addr = f"127.0.0.1:{port}"
    wait_serving(addr)
    channel = grpc.insecure_channel(addr)
    return IndexServer(addr, index_pb2_grpc.IndexStub(channel), server, deps, channel, config.dsn or "")


def stop_index(index: IndexServer) -> None:
    """Stop an index server started by start_index."""
    index.channel.close()
    index.server.stop(0)
    index.deps.close()


@pytest.fixture
def index(pg: EmbeddedPostgres, tmp_path: Path) -> Iterator[IndexServer]:
    """A fresh, empty index for one test."""
    server = start_index(pg, tmp_path / "index-data")
    yield server
    stop_index(server)


@pytest.fixture(scope="session")
def embedder(tiny_bundle_dir: Path) -> Iterator[str]:
    """The address of an in-process embedder serving the tiny model."""
    config = EmbedderConfig(port=0, max_wait_ms=2)
    server = create_embedder(config, Engine(ClipModel(bundle.load(tiny_bundle_dir), "cpu"), config))
    yield f"127.0.0.1:{server.port}"
    server.stop(0.5)


def start_embedder_process(bundle_dir: Path, port: int) -> subprocess.Popen:
    """`python -m embedder_service` on 127.0.0.1:port, SERVING."""
    env = {**os.environ, "EMBEDDER_MODEL_DIR": str(bundle_dir), "EMBEDDER_PORT": str(port),
           "EMBEDDER_PROVIDER": "cpu", "EMBEDDER_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "embedder_service"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(f"127.0.0.1:{port}", alive=lambda: proc.poll() is None)
    except (TimeoutError, RuntimeError):
        proc.kill()
        raise
    return proc


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL a process we started and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
