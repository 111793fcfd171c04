"""The index service in process for tests, and the vectors and items they store."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from index_service.config import Config, HnswParams
from index_service.pg import EmbeddedPostgres
from index_service.server import Deps
from index_service.server import serve as serve_index
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common.server import Server
from tests.support.health import wait_status


def make_config(data_dir: Path, dsn: str, **overrides: object) -> Config:
    """A test config: port 0 on loopback, quick health checks, small HNSW graphs."""
    base = Config(host="127.0.0.1", port=0, dsn=dsn, data_dir=data_dir, health_interval_s=0.2,
                  hnsw=HnswParams(m=16, ef_construction=64, ef=100), grace_s=0.5, pool_size=8)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@dataclass
class Running:
    """An in-process index server and a client to it."""

    config: Config
    deps: Deps
    server: Server
    channel: grpc.Channel
    stub: index_pb2_grpc.IndexStub

    @property
    def port(self) -> int:
        """The port it listens on (127.0.0.1)."""
        return self.server.port

    def health(self) -> int:
        """The overall health status."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status

    def wait_serving(self, timeout_s: float = 30) -> None:
        """Block until health says SERVING."""
        wait_status(self.channel, timeout_s=timeout_s)

    def stop(self) -> None:
        """Stop server and dependencies."""
        self.channel.close()
        self.server.stop(0)
        self.deps.close()


def start_server(config: Config, wait: bool = True, postgres: EmbeddedPostgres | None = None) -> Running:
    """Start an in-process server for `config` (its dsn, served by `postgres` if the service owns that cluster)."""
    deps = Deps.build(config, config.dsn or "", postgres=postgres)
    server = serve_index(config, deps)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    running = Running(config, deps, server, channel, index_pb2_grpc.IndexStub(channel))
    if wait:
        running.wait_serving()
    return running


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


def near_copies(rng: np.random.Generator, vecs: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """One unit vector per row of `vecs` at the given cosine distance from it (a planted near-copy).

    The noise is made orthogonal to the row, so cos = 1 / sqrt(1 + |noise|^2) exactly.
    """
    noise = rng.standard_normal(vecs.shape).astype(np.float32)
    noise -= (noise * vecs).sum(axis=1, keepdims=True) * vecs
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    length = np.sqrt(1.0 / (1.0 - distances) ** 2 - 1.0)[:, None]
    out = vecs + noise * length
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
