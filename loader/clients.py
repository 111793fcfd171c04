"""gRPC channels to the services, bounded retries with backoff, and the pre-flight model check."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc
from semsearch_common.enums import enum_word

log = logging.getLogger(__name__)
T = TypeVar("T")

# A service shutting down cancels the calls it is serving (CANCELLED): as retryable as it being away,
# and safe, since Exists, streamed embedding and Upsert (idempotent on sha256) can all be repeated.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
MESSAGE_LIMIT = 256 * 1024 * 1024


class LoadError(RuntimeError):
    """The run cannot go on (a service gone for too long, a model mismatch); the message says why."""


def channel(addr: str) -> grpc.Channel:
    """An insecure channel that reconnects quickly after a service restarts."""
    return grpc.insecure_channel(addr, options=[
        # Spread calls over every address the name resolves to (a headless Service's embedder pods).
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_send_message_length", MESSAGE_LIMIT),
        ("grpc.max_receive_message_length", MESSAGE_LIMIT),
        # gRPC's default reconnect backoff grows to two minutes; a restarted service should be
        # picked up within a couple of seconds.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ])


class Backoff:
    """Exponential backoff with jitter that gives up `limit_s` after the first failure in a row."""

    def __init__(self, limit_s: float, stop: threading.Event, first_s: float = 0.2, cap_s: float = 5.0) -> None:
        self.limit_s, self.stop, self.first_s, self.cap_s = limit_s, stop, first_s, cap_s
        self._failing_since: float | None = None
        self._delay = first_s

    def reset(self) -> None:
        """A call succeeded: the next failure starts a new series."""
        self._failing_since = None
        self._delay = self.first_s

    def wait(self, what: str) -> None:
        """Sleep before the next attempt, or raise LoadError when failures have lasted too long."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        waited = now - self._failing_since
        if waited >= self.limit_s:
            raise LoadError(f"{what}; gave up after retrying for {waited:.0f} s")
        delay = min(self._delay, self.cap_s, self.limit_s - waited) * random.uniform(0.8, 1.2)
        log.warning("%s; retrying in %.1f s", what, delay)
        self._delay = min(self._delay * 2, self.cap_s)
        if self.stop.wait(delay):
            raise LoadError("stopped")


def describe(err: grpc.RpcError) -> str:
    """'CODE: details' of a failed call."""
    return f"{err.code().name}: {err.details()}"


def call(fn: Callable[[], T], what: str, backoff: Backoff) -> T:
    """Run a unary call, retrying UNAVAILABLE and DEADLINE_EXCEEDED; other errors stop the run."""
    while True:
        try:
            result = fn()
        except grpc.RpcError as err:
            if err.code() in RETRYABLE:
                backoff.wait(f"{what}: {describe(err)}")
                continue
            raise LoadError(f"{what}: {describe(err)}") from None
        backoff.reset()
        return result


@dataclass(frozen=True)
class Model:
    """The model the embedder serves, as every vector of this run will record it."""

    model_id: str
    dim: int


def preflight(embedder: embedder_pb2_grpc.EmbedderStub, index: index_pb2_grpc.IndexStub, timeout_s: float,
              backoff: Backoff) -> Model:
    """Wait for both services, then refuse to start when the index holds another model or dimension."""
    info = call(lambda: embedder.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=timeout_s),
                "embedder GetModelInfo", backoff)
    stats = call(lambda: index.Stats(index_pb2.StatsRequest(), timeout=timeout_s), "index Stats", backoff)
    if stats.dim and stats.dim != info.dim:
        raise LoadError(f"the index stores {stats.dim}-dimensional vectors but the embedder's model "
                        f"{info.model_id} makes {info.dim}-dimensional ones: point the loader at a matching "
                        "index (INDEX_DIM) or embedder")
    # Adopted prototype rows say "unknown"; the index itself decides whether they may be mixed.
    others = [m for m in stats.model_ids if m not in (info.model_id, "unknown")]
    if others:
        raise LoadError(f"the index holds vectors of {', '.join(others)} but the embedder serves "
                        f"{info.model_id}; one collection holds one model")
    if not info.semantic:
        log.warning("the embedder's model %s has random weights (%s): its vectors carry no meaning",
                    info.model_id, info.source)
    log.info("embedder %s (dim %d, %s); index: %d images, backend %s", info.model_id, info.dim,
             ",".join(info.providers), stats.count, enum_word(index_pb2.Backend, stats.backend))
    return Model(info.model_id, info.dim)
