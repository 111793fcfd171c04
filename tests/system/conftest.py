"""In-process stack for the hostile-input tests: the real embedder (tiny model), index (embedded Postgres), gateway.

The helpers come from the service test suites; only the wiring is repeated here so this folder gets a stack
(and a database) of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from gateway.tests.conftest import Embedder, Stack
from gateway.tests.conftest import clip_model as clip_model  # re-exported: pytest finds fixtures by name
from index_service.server import Deps
from index_service.server import serve as serve_index
from index_service.tests.conftest import Running, create_database, drop_database, make_config
from index_service.tests.conftest import embedded_pg as embedded_pg  # re-exported fixture
from protos.semsearch.v1 import index_pb2_grpc


@pytest.fixture(scope="session")
def hostile_stack(clip_model: Any, embedded_pg: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Embedder, index (own database and media store) and a factory of gateways, all in this process."""
    dsn = create_database(embedded_pg)
    config = make_config(tmp_path_factory.mktemp("hostile-index"), dsn)
    deps = Deps.build(config, dsn)
    server = serve_index(config, deps)
    port = server.port
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    index = Running(config, deps, server, channel, index_pb2_grpc.IndexStub(channel))
    index.wait_serving()
    stack = Stack(Embedder(clip_model), index, port, [])
    yield stack
    stack.close()
    drop_database(embedded_pg, dsn)


class RssSampler:
    """Samples this process's resident memory every few milliseconds and keeps the peak."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def now(self) -> int:
        """Current RSS in bytes (also folded into the peak)."""
        rss = self.process.memory_info().rss
        self.peak = max(self.peak, rss)
        return rss

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)


def wait_until(check: Any, timeout_s: float = 10.0) -> None:
    """Poll `check()` until it is true or the time is up (then fail)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def media_files(root: Path) -> list[Path]:
    """Every regular file under a media store."""
    return [p for p in root.rglob("*") if p.is_file()]
