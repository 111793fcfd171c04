"""The HTTP server's connection guard: read timeouts, a connection cap and URL/header size limits.

uvicorn (0.54) puts no timer on a request still being read: its keep-alive timer starts only after a
response, and `limit_concurrency` answers 503 per request while keeping every connection open. So a
client that sends half a request line, or dribbles headers or a body, holds a socket (a file
descriptor) forever. This subclass of uvicorn's httptools protocol closes such connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import GatewayConfig
from gateway.errors import ApiError
from semsearch_common.logs import Throttled

log = logging.getLogger(__name__)
# Far above any URL the API needs (a 1000-character query is at most 9000 bytes percent-encoded).
MAX_URL_BYTES = 16 * 1024
# Names and values of all the headers of one request together.
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Guard:
    """The limits a connection is held to."""

    header_timeout_s: float  # from a request's first byte (or the connection) to its last header
    body_timeout_s: float  # longest wait for the next piece of a body
    max_connections: int
    retry_after_s: int


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a timer on each request until its body is in, and the limits of `guard`."""

    guard: Guard  # set on the subclass protocol_class() makes
    events: Throttled

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._in_body = False
        self._header_bytes = 0
        self._answered = False  # a refusal went out: ignore whatever else the client sends

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override] # as uvicorn's own
        """Count the connection; refuse it over the cap, else start the clock on its first request."""
        super().connection_made(transport)
        if len(self.connections) > self.guard.max_connections:
            self.events.log(logging.WARNING, "cap", "over %d connections: refusing new ones",
                            self.guard.max_connections)
            self._refuse(503, "too many connections; try again shortly", self.guard.retry_after_s)
            return
        self._arm(self.guard.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse, unless this connection was already refused (uvicorn's own, less its warning per bad request)."""
        if self._answered:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self._answered:  # else a callback refused it already (414, 431)
                self.events.log(logging.INFO, "malformed", "answered malformed HTTP requests with 400")
                self._refuse(400, "malformed HTTP request")
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSockets here: served as a plain request

    def on_message_begin(self) -> None:
        """A request starts: its headers must be in within the header timeout (from the connection, for the first)."""
        super().on_message_begin()
        self._in_body, self._header_bytes = False, 0
        if self._timer is None:
            self._arm(self.guard.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        """Collect the URL, up to MAX_URL_BYTES."""
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._refuse(414, f"the URL is over {MAX_URL_BYTES:,} bytes")
            raise _Refused  # the parser stops (data_received sees a parser error)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect a header, up to MAX_HEADER_BYTES for all of them."""
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, f"the request headers are over {MAX_HEADER_BYTES:,} bytes")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """Headers in: from now on the body must keep coming."""
        self._in_body = True
        self._arm(self.guard.body_timeout_s)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """A piece of the body: the wait for the next one starts over."""
        self._arm(self.guard.body_timeout_s)
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The request is in: no clock while the app works (keep-alive has uvicorn's own timer)."""
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_body and self.flow.read_paused:
            # Not the client's fault: we stopped reading because the app has not taken what came.
            self._arm(self.guard.body_timeout_s)
            return
        what = "body" if self._in_body else "request line and headers"
        self.events.log(logging.INFO, what, "closed connections whose %s came too slowly", what)
        if self._in_body and self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # the app is answering: nothing else may go out
            return
        self._refuse(408, f"the request {what} did not arrive in time")

    def _refuse(self, status: int, message: str, retry_after: int | None = None) -> None:
        """Answer with a JSON error and close (an app still waiting on the body then sees a disconnect)."""
        self._answered = True
        self._disarm()
        body = json.dumps(ApiError(status, message).body()).encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "content-type: application/json",
                f"content-length: {len(body)}", "x-content-type-options: nosniff", "connection: close"]
        if retry_after is not None:
            head.append(f"retry-after: {retry_after}")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.transport.close()


_REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


def protocol_class(config: GatewayConfig) -> type[GuardedProtocol]:
    """A GuardedProtocol held to config's limits (uvicorn makes one instance per connection)."""
    guard = Guard(header_timeout_s=config.header_timeout_s, body_timeout_s=config.body_timeout_s,
                  max_connections=config.max_connections, retry_after_s=config.retry_after_s)
    return type("Guarded", (GuardedProtocol,), {"guard": guard, "events": Throttled(log, 10.0)})


def server_config(app: Any, config: GatewayConfig, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the gateway app: the guarded protocol, no WebSockets (the API has none)."""
    return uvicorn.Config(app, http=protocol_class(config), ws="none", timeout_keep_alive=5, **options)
