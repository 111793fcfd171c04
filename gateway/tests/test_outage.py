"""A hung index and a long outage: image downloads give up on time, and 5xx warnings are rate-limited."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from gateway import app as gateway_app
from gateway.app import create_app
from gateway.clients import Backends, Deadline
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.tests.fakes import FakeBackends, rpc_error
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common.errors import Unavailable


class HungIndex(index_pb2_grpc.IndexServicer):
    """An index whose GetImage never answers (as a SIGSTOPped process), until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def GetImage(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """Hang until released or the caller gives up."""
        while not self.release.is_set() and context.is_active():
            self.release.wait(0.05)
        return iter(())


@pytest.fixture
def hung_index() -> Iterator[str]:
    """The address of a HungIndex on 127.0.0.1."""
    servicer = HungIndex()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    index_pb2_grpc.add_IndexServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    servicer.release.set()
    server.stop(0)


@pytest.mark.parametrize("path", ["/images/1", "/images/1/thumb"])
def test_a_download_from_a_hung_index_gives_up_after_the_download_deadline(hung_index: str, path: str) -> None:
    config = GatewayConfig(index_addr=hung_index, download_deadline_s=1.0, upload_deadline_s=120.0)
    with TestClient(create_app(config)) as client:
        started = time.monotonic()
        r = client.get(path)
        took = time.monotonic() - started
    assert r.status_code == 504 and r.json()["error"] == "deadline_exceeded"
    assert 0.9 < took < 5


def test_warnings_of_an_outage_are_one_line_per_interval_with_a_count(monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(gateway_app, "FAILURE_LOG_INTERVAL_S", 1.0)
    fake = FakeBackends(GatewayConfig())
    fake.failures["Search"] = rpc_error(Unavailable("the database is down"))
    caplog.set_level(logging.WARNING, logger="gateway.app")
    with TestClient(create_app(fake.config, connect=lambda _: fake)) as client:
        for _ in range(30):
            assert client.get("/api/search", params={"q": "a dog"}).status_code == 503
        lines = [r.getMessage() for r in caplog.records if r.name == "gateway.app"]
        assert len(lines) == 1 and "503" in lines[0]
        time.sleep(1.1)
        assert client.get("/api/search", params={"q": "a dog"}).status_code == 503
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.app"]
    assert len(lines) == 2 and "29 more like it" in lines[1]


class AgingIndex(index_pb2_grpc.IndexServicer):
    """An index whose Stats fails first with what gRPC says of a call cut off by its connection's age, or with
    a real outage; `calls` counts what arrived."""

    def __init__(self, first: str) -> None:
        self.first, self.calls = first, 0

    def Stats(self, request: Any, context: grpc.ServicerContext) -> index_pb2.StatsResponse:
        """Fail the first call with `first`, answer the rest."""
        self.calls += 1
        if self.calls == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, self.first)
        return index_pb2.StatsResponse(count=7)


@pytest.mark.parametrize(("first", "answer", "calls"), [
    ("Stream removed (GOAWAY received; Error code: 0; Debug Text: max_age)", 7, 2),  # sent again: its count
    ("the database is down", 503, 1)])  # a real outage is the caller's to retry: the HTTP status
def test_a_call_cut_off_as_its_connection_ages_out_is_sent_again(first: str, answer: int, calls: int) -> None:
    servicer = AgingIndex(first)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    index_pb2_grpc.add_IndexServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        backends_only = GatewayConfig(index_addr=f"127.0.0.1:{port}")

        async def stats() -> int:
            backends = Backends(backends_only)
            try:
                return (await backends.stats(Deadline(5.0))).count
            except ApiError as err:
                return err.status
            finally:
                await backends.close()

        assert asyncio.run(stats()) == answer and servicer.calls == calls
    finally:
        server.stop(0)
