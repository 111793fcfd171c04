"""What every gRPC server of the project shares: its channel options, a request-decoding guard, reflection."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

# grpcio-reflection (1.85) ships only v1alpha; v1 is the same messages under a new package name, so the same
# servicer answers both (grpcurl and Postman ask for v1 first).
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Server reflection v1 and v1alpha for these services (the reflection services are listed too)."""
    names = (*service_names, REFLECTION_V1, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": method}),))


def server_options(message_limit: int) -> list[tuple[str, int]]:
    """Message size limits, and a maximum connection age so callers re-resolve DNS and find new replicas."""
    return [("grpc.max_receive_message_length", message_limit), ("grpc.max_send_message_length", message_limit),
            ("grpc.max_connection_age_ms", 300_000), ("grpc.max_connection_age_grace_ms", 60_000)]


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _message(bad: _Undecodable) -> str:
    return f"the request is not a valid protobuf message: {bad.reason}"


class RejectUndecodable(grpc.ServerInterceptor):
    """Answers INVALID_ARGUMENT to request bytes that are not a valid message, unary or streamed.

    grpcio itself answers INTERNAL ("Exception deserializing request!") before any servicer code runs,
    blaming the server for the caller's bytes (e.g. invalid UTF-8 in a string field).
    """

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        """Wrap the method's deserializer and behaviour; other handlers pass through unchanged."""
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer

        def safe(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's
                return _Undecodable(str(exc) or type(exc).__name__)

        if handler.request_streaming:
            kind = "stream_stream" if handler.response_streaming else "stream_unary"
            behaviour = getattr(handler, kind)

            def streaming(requests: Iterator, context: grpc.ServicerContext) -> Any:
                return behaviour(_checked(requests, context), context)

            return handler._replace(request_deserializer=safe, **{kind: streaming})
        kind = "unary_stream" if handler.response_streaming else "unary_unary"
        behaviour = getattr(handler, kind)

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(request))
            return behaviour(request, context)

        return handler._replace(request_deserializer=safe, **{kind: unary})


def _checked(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
    for request in requests:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(request))
        yield request
