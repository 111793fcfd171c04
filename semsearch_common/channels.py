"""Client channels to the services: one set of options, retries with backoff, waiting until SERVING."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

# Large enough for a full Upsert batch of originals; the servers enforce their own, published limits.
MESSAGE_LIMIT = 256 * 1024 * 1024
# A service shutting down cancels the calls it is serving (CANCELLED): as retryable as it being away.
# Only repeatable calls may be retried: reads, embeddings, and Upsert (idempotent on sha256).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})


def options(message_limit: int = MESSAGE_LIMIT) -> list[tuple[str, int | str]]:
    """Channel arguments every client of the project uses."""
    return [
        # Spread calls over every address the name resolves to (a headless Service's pods: dns:///embedder:50051).
        ("grpc.lb_policy_name", "round_robin"),
        # A restarted service is found again within about a second, not after gRPC's default 120 s backoff.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # Notice a dead peer on an idle connection instead of waiting for TCP to give up.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.max_receive_message_length", message_limit),
        ("grpc.max_send_message_length", message_limit),
    ]


def channel(addr: str, message_limit: int = MESSAGE_LIMIT) -> grpc.Channel:
    """A blocking-API channel to `addr` (host:port or dns:///name:port)."""
    return grpc.insecure_channel(addr, options=options(message_limit))


def aio_channel(addr: str, message_limit: int = MESSAGE_LIMIT) -> grpc.aio.Channel:
    """An asyncio channel to `addr`; create it inside the event loop that uses it."""
    return grpc.aio.insecure_channel(addr, options=options(message_limit))


class GaveUp(RuntimeError):
    """Retrying lasted longer than allowed, or a stop was asked for; the message says what failed."""


class Backoff:
    """Exponential backoff with jitter that gives up `limit_s` after the first failure in a row."""

    def __init__(self, limit_s: float, stop: threading.Event | None = None, first_s: float = 0.2,
                 cap_s: float = 5.0) -> None:
        self.limit_s, self.first_s, self.cap_s = limit_s, first_s, cap_s
        self.stop = stop or threading.Event()
        self._failing_since: float | None = None
        self._delay = first_s

    def reset(self) -> None:
        """A call succeeded: the next failure starts a new series."""
        self._failing_since = None
        self._delay = self.first_s

    def wait(self, what: str) -> None:
        """Sleep before the next attempt, or raise GaveUp when failures have lasted too long."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        waited = now - self._failing_since
        if waited >= self.limit_s:
            raise GaveUp(f"{what}; gave up after retrying for {waited:.0f} s")
        delay = min(self._delay, self.cap_s, self.limit_s - waited) * random.uniform(0.8, 1.2)
        log.warning("%s; retrying in %.1f s", what, delay)
        self._delay = min(self._delay * 2, self.cap_s)
        if self.stop.wait(delay):
            raise GaveUp("stopped")


def describe(err: grpc.RpcError) -> str:
    """'CODE: details' of a failed call."""
    return f"{err.code().name}: {err.details()}"


def retry(fn: Callable[[], T], what: str, backoff: Backoff, retryable: frozenset[grpc.StatusCode] = RETRYABLE) -> T:
    """Run a repeatable call, retrying the retryable codes with backoff; other failures are raised as they are."""
    while True:
        try:
            result = fn()
        except grpc.RpcError as err:
            if err.code() in retryable:
                backoff.wait(f"{what}: {describe(err)}")
                continue
            raise
        backoff.reset()
        return result


def is_serving(chan: grpc.Channel, service: str = "", timeout_s: float = 1.0) -> bool:
    """Whether the health service says SERVING for `service` ("" = the server as a whole)."""
    try:
        reply = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=service),
                                                        timeout=timeout_s)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_serving(addr: str, timeout_s: float = 60.0, service: str = "",
                 alive: Callable[[], bool] = lambda: True) -> None:
    """Block until the server at `addr` is SERVING; TimeoutError after `timeout_s`, RuntimeError when `alive` fails."""
    deadline = time.monotonic() + timeout_s
    with channel(addr) as chan:
        while not is_serving(chan, service):
            if not alive():
                raise RuntimeError(f"the server for {addr} exited before it was serving")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{addr} was not SERVING within {timeout_s:.0f} s")
            time.sleep(0.1)


async def aio_is_serving(chan: grpc.aio.Channel, timeout_s: float, service: str = "") -> bool:
    """The asyncio form of is_serving."""
    try:
        reply = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=timeout_s)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
