"""The whole system as real processes for the system tests: Postgres, index, embedder, gateway, loader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import psutil

from index_service.pg import EmbeddedPostgres
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc
from semsearch_common.channels import channel, is_serving
from tests.support.net import free_port
from tests.support.pg import create_database

REPO = Path(__file__).resolve().parents[2]
# No OS crash is simulated, so fsync can go; commits stay synchronous because Postgres itself is
# stopped with -m immediate, and an acknowledged commit must survive that.
PG_SETTINGS = {"fsync": "off", "full_page_writes": "off", "max_connections": "200"}


class Service:
    """One service as its own process (`python -m module`), restartable on the same port."""

    def __init__(self, module: str, env: dict[str, str], port: int, log_dir: Path, http: bool = False) -> None:
        self.module, self.env, self.port, self.http = module, env, port, http
        self.addr = f"127.0.0.1:{port}"
        self.log_path = log_dir / f"{module}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0, wait: bool = True, **extra_env: str) -> Service:
        """Start the process and (unless wait is False) block until it is serving."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=REPO, stdout=log,
                                         stderr=subprocess.STDOUT, env={**os.environ, **self.env, **extra_env})
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until the gRPC health check says SERVING (the gateway: until /healthz answers)."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}; log: {self.log_tail()}")
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.module} not ready after {timeout_s} s; log: {self.log_tail()}")
            time.sleep(0.05)

    def ready(self) -> bool:
        """One readiness probe."""
        if self.http:
            try:
                return httpx.get(f"http://{self.addr}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        with channel(self.addr) as chan:
            return is_serving(chan)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 20 s) and reap."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss(self) -> int:
        """Resident memory of the process, in bytes."""
        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def index_service(pg: EmbeddedPostgres, data_dir: Path, log_dir: Path, **env: str) -> Service:
    """An index service over a new database on pg (not started)."""
    port = free_port()
    base = {"INDEX_DSN": create_database(pg), "INDEX_PORT": str(port), "INDEX_DATA_DIR": str(data_dir),
            "INDEX_HEALTH_INTERVAL_S": "0.5", "INDEX_GRACE_S": "1", "INDEX_LOG_LEVEL": "INFO"}
    return Service("index_service", {**base, **env}, port, log_dir)


def embedder_service(bundle_dir: Path, log_dir: Path, **env: str) -> Service:
    """An embedder serving bundle_dir on the CPU (not started)."""
    port = free_port()
    base = {"EMBEDDER_MODEL_DIR": str(bundle_dir), "EMBEDDER_PORT": str(port), "EMBEDDER_PROVIDER": "cpu",
            "EMBEDDER_LOG_LEVEL": "WARNING"}
    return Service("embedder_service", {**base, **env}, port, log_dir)


def gateway(embedder: Service, index: Service, log_dir: Path, **env: str) -> Service:
    """A gateway in front of embedder and index (not started)."""
    port = free_port()
    base = {"GATEWAY_EMBEDDER_ADDR": embedder.addr, "GATEWAY_INDEX_ADDR": index.addr, "GATEWAY_PORT": str(port),
            "GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_TOKEN": ""}
    return Service("gateway", {**base, **env}, port, log_dir, http=True)


@contextmanager
def running(*services: Service) -> Iterator[tuple[Service, ...]]:
    """Start services in order; stop every one of them (in reverse) however the block ends."""
    try:
        for service in services:
            service.start()
        yield services
    finally:
        for service in reversed(services):
            service.stop()


class IndexClient:
    """The Index API of a service process, shaped like the loader tests' IndexServer (count, metas)."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.channel = grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 << 20)])
        self.stub = index_pb2_grpc.IndexStub(self.channel)

    def count(self) -> int:
        """Rows stored."""
        return int(self.stub.Stats(index_pb2.StatsRequest(), timeout=10).count)

    def metas(self) -> list[index_pb2.ImageMeta]:
        """Metadata of every row (ids from 1 to 9,999 in a fresh database)."""
        return list(self.stub.Get(index_pb2.GetRequest(ids=range(1, 10_000)), timeout=30).images)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def model_id(embedder: Service) -> str:
    """The model id the embedder stamps on its vectors."""
    with grpc.insecure_channel(embedder.addr) as channel:
        info = embedder_pb2_grpc.EmbedderStub(channel).GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=30)
        return str(info.model_id)


def restart_postgres(pg: EmbeddedPostgres, mode: str = "immediate", down_s: float = 1.0) -> None:
    """Stop Postgres (pg_ctl -m mode), keep it down for down_s, start it again on the same port."""
    port = pg.port
    pg.stop(mode=mode)
    assert not pg.is_running()
    time.sleep(down_s)
    pg.start()
    assert pg.port == port

