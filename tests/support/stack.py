"""The whole stack in process: the real embedder (tiny model), the real index (embedded Postgres), gateways."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from embedder_service.config import EmbedderConfig
from embedder_service.engine import Engine
from embedder_service.model import ClipModel
from embedder_service.server import EmbedderServer
from embedder_service.server import create_server as create_embedder
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.guard import server_config
from index_service.pg import EmbeddedPostgres
from tests.support.index import Running, make_config, start_server
from tests.support.pg import create_database, drop_database

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
            except (OSError, RuntimeError):  # the old socket may linger for a moment: time must pass
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class _Uvicorn(uvicorn.Server):
    """uvicorn.Server that says when its start-up has finished (it only offers a flag to poll)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.done_starting = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.done_starting.set()


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
        self.server = _Uvicorn(server_config(create_app(config), config, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        assert self.server.done_starting.wait(15) and self.server.started, "gateway did not start"
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


def build_stack(model: ClipModel, pg: EmbeddedPostgres, data_dir: Path) -> tuple[Stack, Callable[[], None]]:
    """Embedder and index (a new database on `pg`, media under data_dir), and the function that removes both."""
    dsn = create_database(pg)
    index = start_server(make_config(data_dir, dsn))
    stack = Stack(Embedder(model), index, index.port, [])

    def close() -> None:
        stack.close()
        drop_database(pg, dsn)

    return stack, close
