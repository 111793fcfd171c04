"""The HTTP server's guard, in front of a fake of the services: slow or half-sent requests, the cap, long URLs."""

from __future__ import annotations

import dataclasses
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.guard import server_config
from gateway.tests.fakes import FakeBackends


class Served:
    """The gateway app in front of a fake, under the guarded uvicorn server in a thread, on 127.0.0.1."""

    def __init__(self, config: GatewayConfig) -> None:
        self.fake = FakeBackends(config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = create_app(config, connect=lambda _: self.fake)
        self.server = uvicorn.Server(server_config(app, config, log_level="warning", backlog=4096))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "gateway did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def connect(self, first: bytes = b"") -> socket.socket:
        """A raw connection that has sent `first`."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if first:
            sock.sendall(first)
        return sock

    def stop(self) -> None:
        """Stop the server and wait for it."""
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start a gateway with some settings changed; each is stopped at teardown."""
    started: list[Served] = []

    def start(**overrides: Any) -> Served:
        config = dataclasses.replace(GatewayConfig(retry_after_s=3), **overrides)
        started.append(Served(config))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def answer(sock: socket.socket, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(within_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"still open after {within_s} s; got {data[:80]!r}")
    except ConnectionResetError:
        pass  # closed while we were still sending: the kernel may drop what came before the reset
    finally:
        sock.close()
    return data, time.monotonic() - started


def status_and_body(raw: bytes) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_half_sent_request_line_is_answered_408_and_closed(serve: Any) -> None:
    gw = serve(header_timeout_s=0.5)
    socks = [gw.connect(b"GET /api/st") for _ in range(50)]
    for sock in socks:
        raw, _ = answer(sock, 5)
        status, body = status_and_body(raw)
        assert status == 408 and body["error"] == "request_timeout" and "did not arrive in time" in body["message"]


def test_a_connection_that_sends_nothing_is_closed(serve: Any) -> None:
    gw = serve(header_timeout_s=0.5)
    raw, took = answer(gw.connect(), 5)
    assert status_and_body(raw)[0] == 408 and took < 3


def test_dribbled_headers_are_cut_off(serve: Any) -> None:
    gw = serve(header_timeout_s=1.0)
    sock = gw.connect()
    started = time.monotonic()
    request = b"GET /api/stats HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
    try:
        for byte in request:
            sock.send(bytes([byte]))
            time.sleep(0.01)
            assert time.monotonic() - started < 5, "headers still accepted after 5 s"
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed under us: what we want
    took = time.monotonic() - started
    assert took < 3
    sock.close()


def test_a_body_that_stops_coming_is_answered_and_closed(serve: Any) -> None:
    gw = serve(body_timeout_s=0.5)
    sock = gw.connect(b"POST /api/search/image HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 100000\r\n\r\n--b\r\n")
    raw, took = answer(sock, 5)
    status, body = status_and_body(raw)
    assert status == 408 and "body" in body["message"] and took < 3
    assert gw.client.get("/api/search", params={"q": "a dog"}).status_code == 200  # the app is fine


def test_a_slow_but_steady_body_is_read(serve: Any) -> None:
    gw = serve(body_timeout_s=0.5)
    form = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\nabc\r\n--b--\r\n"
    head = (b"POST /api/search/image HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n")
    sock = gw.connect(head + f"Content-Length: {len(form)}\r\n\r\n".encode())
    for n in range(0, len(form), 20):  # over a second in all, each piece well within the timeout
        sock.sendall(form[n:n + 20])
        time.sleep(0.2)
    raw, _ = answer(sock, 5)
    assert status_and_body(raw)[0] == 415  # the fake's bytes are no image: the request was read whole


def test_connections_over_the_cap_get_503_and_are_closed(serve: Any) -> None:
    gw = serve(max_connections=5, header_timeout_s=3.0)
    held = [gw.connect() for _ in range(5)]
    time.sleep(0.2)
    raw, _ = answer(gw.connect(), 2)
    status, body = status_and_body(raw)
    assert status == 503 and b"retry-after: 3" in raw.lower() and "too many connections" in body["message"]
    for sock in held:
        sock.close()
    time.sleep(0.2)
    assert gw.client.get("/api/search", params={"q": "a dog"}).status_code == 200


def test_an_over_long_url_is_a_json_414(serve: Any) -> None:
    gw = serve()
    # Raw: httpx itself refuses to send a URL this long.
    raw, _ = answer(gw.connect(b"GET /api/search?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"), 5)
    status, body = status_and_body(raw)
    assert status == 414 and b"content-type: application/json" in raw.lower() and body["error"] == "uri_too_long"


def test_over_long_headers_are_a_json_431(serve: Any) -> None:
    gw = serve()
    r = gw.client.get("/api/stats", headers={f"x-h{i}": "v" * 1000 for i in range(80)})
    assert r.status_code == 431 and r.json()["status"] == 431


def test_a_malformed_request_is_a_json_400(serve: Any) -> None:
    gw = serve()
    raw, _ = answer(gw.connect(b"GET / HTTP/1.1\r\nHost x\r\n\r\n"), 5)
    status, body = status_and_body(raw)
    assert status == 400 and body["status"] == 400


def test_searches_answer_while_2000_slow_connections_are_open(serve: Any) -> None:
    slow = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * slow + 512  # both ends live in this process
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"only {hard} open files allowed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        gw = serve(header_timeout_s=4.0)
        socks = [gw.connect(b"GET /api/sea") for _ in range(slow)]
        stop = threading.Event()

        def dribble() -> None:  # one more byte on each, every 100 ms, until the server closes them
            while not stop.is_set():
                for sock in socks:
                    try:
                        sock.send(b"r")
                    except OSError:
                        pass
                stop.wait(0.1)

        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        try:
            for _ in range(20):
                started = time.monotonic()
                assert gw.client.get("/api/search", params={"q": "a dog"}).status_code == 200
                assert time.monotonic() - started < 5  # generous: the machine may be shared
        finally:
            stop.set()
            dribbler.join()
        for sock in socks:
            answer(sock, 10)  # closed: the header timeout from their start, plus slack
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
