"""Fixtures: one embedded Postgres per session, a fresh database per test, an in-process server."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from index_service.config import Config, HnswParams
from index_service.pg import EmbeddedPostgres
from index_service.server import Deps
from index_service.server import serve as serve_index
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common.server import Server

# Tests never need crash durability of the test cluster itself.
FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off", "max_connections": "300"}


@pytest.fixture(scope="session")
def embedded_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A session-wide embedded Postgres on 127.0.0.1 (a port of its choosing), stopped at the end."""
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("index-pg"), settings=FAST_SETTINGS)
    pg.start()
    yield pg
    pg.stop(mode="immediate")


@contextlib.contextmanager
def scratch_postgres(prefix: str, settings: dict[str, str] | None = None) -> Iterator[EmbeddedPostgres]:
    """A started embedded Postgres in a folder of its own, stopped and removed afterwards.

    For tests that stop and start their server, or must not share the session one.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root, settings=settings or FAST_SETTINGS)
    try:
        server.start()
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def create_database(pg: EmbeddedPostgres) -> str:
    """A new empty database on `pg`; returns its DSN."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(pg.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return pg.dsn(name)


def drop_database(pg: EmbeddedPostgres, dsn: str) -> None:
    """Drop a test database, closing whatever still uses it."""
    name = dsn.rsplit("dbname=", 1)[1]
    if not pg.is_running():
        return
    conn = psycopg2.connect(pg.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


@pytest.fixture
def pg_dsn(embedded_pg: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database of the session server, dropped after the test."""
    dsn = create_database(embedded_pg)
    yield dsn
    drop_database(embedded_pg, dsn)


def make_config(data_dir: Path, dsn: str, **overrides: object) -> Config:
    """A test config: port 0 on loopback, quick health checks, small HNSW graphs."""
    base = Config(host="127.0.0.1", port=0, dsn=dsn, data_dir=data_dir, health_interval_s=0.2,
                  hnsw=HnswParams(m=16, ef_construction=64, ef=100), grace_s=0.5, pool_size=8)
    return dataclasses.replace(base, **overrides)


@dataclass
class Running:
    """An in-process index server and a client to it."""

    config: Config
    deps: Deps
    server: Server
    channel: grpc.Channel
    stub: index_pb2_grpc.IndexStub

    def health(self) -> int:
        """The overall health status."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status

    def wait_serving(self, timeout_s: float = 30) -> None:
        """Block until health says SERVING."""
        deadline = time.monotonic() + timeout_s
        while self.health() != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "index server never became SERVING"
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop server and dependencies."""
        self.channel.close()
        self.server.stop(0)
        self.deps.close()


def start_server(config: Config, wait: bool = True, postgres: EmbeddedPostgres | None = None) -> Running:
    """Start an in-process server for `config` (its dsn, served by `postgres` if the service owns that cluster)."""
    deps = Deps.build(config, config.dsn or "", postgres=postgres)
    server = serve_index(config, deps)
    port = server.port
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    running = Running(config, deps, server, channel, index_pb2_grpc.IndexStub(channel))
    if wait:
        running.wait_serving()
    return running


@pytest.fixture
def index(tmp_path: Path, pg_dsn: str) -> Iterator[Running]:
    """A ready index server on its own database and data dir."""
    running = start_server(make_config(tmp_path / "data", pg_dsn))
    yield running
    running.stop()


def unit(rng: np.random.Generator, dim: int = 512) -> np.ndarray:
    """A random unit vector."""
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def clustered(rng: np.random.Generator, n: int, clusters: int, dim: int = 512, spread: float = 0.35) -> np.ndarray:
    """CLIP-like data: unit vectors scattered around `clusters` random centres."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    x = centres[rng.integers(0, clusters, n)] + noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def item(vec: np.ndarray, key: str, label: str = "cat", source: str = "test", model: str = "clip@1",
         thumb: bytes = b"\xff\xd8\xffthumb") -> index_pb2.UpsertItem:
    """An upsert item whose original is derived from `key`."""
    original = f"original-{key}".encode()
    return index_pb2.UpsertItem(
        sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
        thumbnail=thumb, width=640, height=480, label=label, source=source, file_name=f"{key}.jpg",
        embedding=vec.tolist(), model_id=model,
    )
