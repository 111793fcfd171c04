"""The whole stack in process: the real embedder (tiny model), the real index (embedded Postgres), the gateway."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn

from embedder_service.config import EmbedderConfig
from embedder_service.engine import Engine
from embedder_service.model import ClipModel
from embedder_service.models import bundle
from embedder_service.server import EmbedderServer
from embedder_service.server import create_server as create_embedder
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.guard import server_config
from index_service.server import Deps
from index_service.server import serve as serve_index
from index_service.tests.conftest import Running, create_database, drop_database, make_config
from index_service.tests.conftest import embedded_pg as embedded_pg  # re-exported: pytest finds fixtures by name
from protos.semsearch.v1 import index_pb2_grpc

TOKEN = "test-token-3f9a"


class Embedder:
    """An in-process embedder that can be stopped and started again on the same port."""

    def __init__(self, model: ClipModel, port: int = 0) -> None:
        self.model = model
        self.config = EmbedderConfig(port=port, max_wait_ms=2)
        self.server: EmbedderServer = create_embedder(self.config, Engine(model, self.config))
        self.port = self.server.port

    def stop(self) -> None:
        """Stop now: in-flight calls are cut."""
        self.server.stop(0)

    def restart(self) -> None:
        """A fresh server on the same port (as a restarted pod would be)."""
        config = dataclasses.replace(self.config, port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.server = create_embedder(config, Engine(self.model, config))
                return
            except (OSError, RuntimeError):  # the old socket may linger for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class Gateway:
    """The gateway under uvicorn in a thread, on a port of its own on 127.0.0.1."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The server the gateway runs under (the guarded protocol), not uvicorn's default one.
        self.server = uvicorn.Server(server_config(create_app(config), config, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "gateway did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for it."""
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)


@dataclasses.dataclass
class Stack:
    """Backends plus a gateway factory; gateways made here are stopped at teardown."""

    embedder: Embedder
    index: Running
    index_port: int
    gateways: list[Gateway]

    def gateway(self, **overrides: Any) -> Gateway:
        """A new gateway in front of these backends."""
        base = GatewayConfig(embedder_addr=f"127.0.0.1:{self.embedder.port}",
                             index_addr=f"127.0.0.1:{self.index_port}", search_deadline_s=5.0,
                             retry_after_s=1)
        gw = Gateway(dataclasses.replace(base, **overrides))
        self.gateways.append(gw)
        return gw

    def close(self) -> None:
        """Stop everything this stack started."""
        for gw in self.gateways:
            gw.stop()
        self.embedder.stop()
        self.index.stop()


@pytest.fixture(scope="session")
def clip_model(tiny_bundle_dir: Path) -> ClipModel:
    """The tiny random-weight model, loaded once."""
    return ClipModel(bundle.load(tiny_bundle_dir), "cpu")


def _stack(model: ClipModel, pg: Any, data_dir: Path) -> tuple[Stack, Callable[[], None]]:
    dsn = create_database(pg)
    config = make_config(data_dir, dsn)
    deps = Deps.build(config, dsn)
    server = serve_index(config, deps)
    port = server.port
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    index = Running(config, deps, server, channel, index_pb2_grpc.IndexStub(channel))
    index.wait_serving()
    stack = Stack(Embedder(model), index, port, [])

    def close() -> None:
        stack.close()
        drop_database(pg, dsn)

    return stack, close


@pytest.fixture(scope="session")
def stack(clip_model: ClipModel, embedded_pg: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack shared by the API and browser tests (they use distinct images, so they do not collide)."""
    s, close = _stack(clip_model, embedded_pg, tmp_path_factory.mktemp("gw-index"))
    yield s
    close()


@pytest.fixture
def private_stack(clip_model: ClipModel, embedded_pg: Any,
                  tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for tests that stop a backend."""
    s, close = _stack(clip_model, embedded_pg, tmp_path / "index")
    yield s
    close()


@pytest.fixture(scope="session")
def gw(stack: Stack) -> Gateway:
    """The shared open gateway (no token)."""
    return stack.gateway()


@pytest.fixture(scope="session")
def api(gw: Gateway) -> httpx.Client:
    """An HTTP client of the shared gateway."""
    return gw.client
