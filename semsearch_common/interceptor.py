"""One server interceptor for every RPC: decode guard, default deadline, error mapping, metrics.

- Request bytes that are not a valid message get INVALID_ARGUMENT (grpcio itself answers INTERNAL,
  blaming the server for the caller's bytes, e.g. invalid UTF-8 in a string field).
- A caller without a deadline gets the server's default: grpcio reports "no deadline" as a huge
  remaining time, which must never reach a database timeout or a queue wait.
- A ServiceError leaves as a google.rpc.Status with its ErrorInfo reason; anything else is a bug:
  logged with its trace and answered INTERNAL.
- Each call is counted by method and code, and timed, for Prometheus.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import Counter, Histogram

from semsearch_common import status
from semsearch_common.errors import InvalidArgument, ServiceError

log = logging.getLogger(__name__)

# A remaining time above this is grpcio's way of saying the caller set no deadline (about 4 months).
NO_DEADLINE_ABOVE_S = 1e7
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_METRICS: dict[str, tuple[Counter, Histogram]] = {}

# grpc-stubs makes ServerInterceptor generic; grpcio's class cannot be subscripted at run time.
if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor


def rpc_metrics(prefix: str) -> tuple[Counter, Histogram]:
    """`<prefix>_requests_total{method,code}` and `<prefix>_request_seconds{method}`, made once per process."""
    if prefix not in _METRICS:
        _METRICS[prefix] = (
            Counter(f"{prefix}_requests", "RPCs answered, by method and status code", ["method", "code"]),
            Histogram(f"{prefix}_request_seconds", "RPC latency", ["method"], buckets=BUCKETS),
        )
    return _METRICS[prefix]


class CallContext:
    """The servicer's view of a call: grpc's context with a bounded deadline, remembering how it ended."""

    def __init__(self, context: grpc.ServicerContext, default_deadline_s: float | None) -> None:
        self._context = context
        left = context.time_remaining()
        self.has_deadline = left is not None and left < NO_DEADLINE_ABOVE_S
        self._end = None if self.has_deadline or default_deadline_s is None else time.monotonic() + default_deadline_s
        self.code = grpc.StatusCode.OK
        self.aborted = False

    def time_remaining(self) -> float | None:
        """Seconds left: the caller's deadline, else the server's default; None only when neither exists."""
        if self.has_deadline:
            return self._context.time_remaining()
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        """End the call with a status (raises)."""
        self.code, self.aborted = code, True
        self._context.abort(code, details)

    def abort_with_status(self, to_send: grpc.Status) -> None:
        """End the call with a rich status (raises)."""
        self.code, self.aborted = to_send.code, True
        self._context.abort_with_status(to_send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class ServiceInterceptor(_Interceptor):
    """Wraps every method handler of a server; see the module's docstring."""

    def __init__(self, metrics_prefix: str, default_deadline_s: float | None,
                 on_error: Callable[[ServiceError], None] | None = None, unbounded: tuple[str, ...] = ()) -> None:
        self.requests, self.latency = rpc_metrics(metrics_prefix)
        self.default_deadline_s = default_deadline_s
        self.on_error = on_error
        self.unbounded = frozenset(unbounded)

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        """The handler of `details.method`, wrapped; unknown methods pass through."""
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        kind = {(False, False): "unary_unary", (False, True): "unary_stream",
                (True, False): "stream_unary", (True, True): "stream_stream"}[
            (handler.request_streaming, handler.response_streaming)]
        behaviour = getattr(handler, kind)
        if behaviour is None:
            return handler
        # A request-streaming call (a bulk load) may run as long as its caller wants.
        default = None if handler.request_streaming or method in self.unbounded else self.default_deadline_s
        wrapped = (self._streaming if handler.response_streaming else self._unary)(method, behaviour, default,
                                                                                   handler.request_streaming)
        replaced: dict[str, Any] = {kind: wrapped}
        if handler.request_deserializer is not None:
            replaced["request_deserializer"] = _safe(handler.request_deserializer)
        return handler._replace(**replaced)

    def _unary(self, method: str, behaviour: Callable[..., Any], default: float | None,
               request_streaming: bool) -> Callable[[Any, grpc.ServicerContext], Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            with self._observed(method, context, default) as call:
                return behaviour(_checked(request, request_streaming), call)

        return run

    def _streaming(self, method: str, behaviour: Callable[..., Any], default: float | None,
                   request_streaming: bool) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._observed(method, context, default) as call:
                yield from behaviour(_checked(request, request_streaming), call)

        return run

    @contextlib.contextmanager
    def _observed(self, method: str, context: grpc.ServicerContext, default: float | None) -> Iterator[CallContext]:
        """The call's context; on the way out, its failure mapped to a status and the call counted and timed."""
        call, started = CallContext(context, default), time.perf_counter()
        try:
            yield call
        except BaseException as exc:
            self._fail(method, call, exc)
            raise
        finally:
            self._record(method, call, started)

    def _fail(self, method: str, call: CallContext, exc: BaseException) -> None:
        """Turn an exception into the call's status (raises through abort), unless the servicer already aborted."""
        if isinstance(exc, GeneratorExit):  # the caller cancelled a stream
            call.code = grpc.StatusCode.CANCELLED
        if call.aborted or not isinstance(exc, Exception):
            return
        if isinstance(exc, ServiceError):
            log.debug("%s -> %s %s: %s", method, exc.code, exc.reason, exc)
            if self.on_error is not None:
                self.on_error(exc)
            call.abort_with_status(status.to_grpc(exc))
        log.error("%s failed", method, exc_info=exc)
        call.abort(grpc.StatusCode.INTERNAL, f"internal error in {method} (logged by the server)")

    def _record(self, method: str, call: CallContext, started: float) -> None:
        self.requests.labels(method, call.code.name).inc()
        self.latency.labels(method).observe(time.perf_counter() - started)


def _safe(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def safe(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # any parse failure is the caller's
            return _Undecodable(str(exc) or type(exc).__name__)

    return safe


def _checked(request: Any, streaming: bool) -> Any:
    if streaming:
        return _checked_stream(request)
    if isinstance(request, _Undecodable):
        raise InvalidArgument(f"the request is not a valid protobuf message: {request.reason}")
    return request


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        yield _checked(request, False)
