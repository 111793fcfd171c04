"""gRPC server construction: options, the interceptor, health, reflection, a port of its own, graceful stop."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from semsearch_common.errors import ServiceError
from semsearch_common.interceptor import ServiceInterceptor

log = logging.getLogger(__name__)

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class PortInUse(OSError):
    """Another process already listens on the address; the message names it."""


@dataclass(frozen=True)
class ServerSettings:
    """How a service listens; every service fills this from its own configuration."""

    host: str
    port: int
    workers: int = 16
    message_limit: int = 64 * 1024 * 1024
    # Applied to unary calls whose caller set no deadline; None leaves them unbounded.
    default_deadline_s: float | None = 120.0
    # Methods that may run longer than any default (an index build): no deadline unless the caller sets one.
    unbounded: tuple[str, ...] = ()
    # Prefix of the RPC metrics, e.g. "index" -> index_requests_total.
    metrics_prefix: str = "rpc"


CALL_GRACE_MS = 6 * 3600 * 1000  # a call may outlive its connection's age by this much


def options(message_limit: int) -> list[tuple[str, int]]:
    """Server channel arguments shared by every service."""
    return [
        ("grpc.max_receive_message_length", message_limit),
        ("grpc.max_send_message_length", message_limit),
        # grpcio turns SO_REUSEPORT on by default: a second instance would then share the port silently
        # and take half of the calls. Off, the second one fails to bind and says so.
        ("grpc.so_reuseport", 0),
        # Callers re-resolve DNS when a connection ages out, so new replicas get traffic. The aged connection
        # takes no new calls but keeps those under way: its grace must outlast the longest call, and a
        # BuildIndex of millions of rows or a loader's stream runs for many minutes (a minute cut them off).
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", CALL_GRACE_MS),
    ]


class Server:
    """A started gRPC server with its health service and the names of the services it hosts."""

    def __init__(self, server: grpc.Server, port: int, health_servicer: health.HealthServicer,
                 names: Sequence[str]) -> None:
        self.server, self.port, self.health, self.names = server, port, health_servicer, tuple(names)

    def set_serving(self, up: bool) -> None:
        """Report SERVING or NOT_SERVING for the server as a whole and each service (ignored once stopping)."""
        state = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.names):
            self.health.set(name, state)

    def stop(self, grace: float, drain_s: float = 0.0) -> None:
        """Report NOT_SERVING for good, keep answering for `drain_s` so balancers notice, then stop.

        grpcio refuses new calls as soon as stop() begins; in-flight ones get `grace` seconds to finish.
        """
        self.health.enter_graceful_shutdown()
        if drain_s > 0:
            threading.Event().wait(drain_s)
        self.server.stop(grace).wait()


def ensure_free(host: str, port: int) -> None:
    """Raise PortInUse when something already listens on host:port (0 is always free).

    For a service that must start other things (a database) before it can build its server: it fails
    early, before touching them. The server's own bind still refuses a port taken in between.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR lets the probe bind over connections in TIME_WAIT but, on Linux, never over a listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as err:
            raise PortInUse(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def create_server(settings: ServerSettings, names: Sequence[str], register: Callable[[grpc.Server], None],
                  on_error: Callable[[ServiceError], None] | None = None) -> Server:
    """Build, bind and start a server hosting the services `register` adds, NOT_SERVING until set_serving(True).

    `names` are the full names of those services (for health and reflection). Raises PortInUse when the
    address is taken.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix=f"{settings.metrics_prefix}-rpc"),
        options=options(settings.message_limit),
        interceptors=[ServiceInterceptor(settings.metrics_prefix, settings.default_deadline_s, on_error,
                                         settings.unbounded)],
    )
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _add_reflection(server, (*names, health.SERVICE_NAME))
    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as err:  # grpcio raises when the bind fails
        raise PortInUse(f"cannot listen on {address}: the address is in use or not available") from err
    if port == 0:
        raise PortInUse(f"cannot listen on {address}: the address is in use or not available")
    result = Server(server, port, health_servicer, names)
    result.set_serving(False)
    server.start()
    return result


def _add_reflection(server: grpc.Server, names: Sequence[str]) -> None:
    """Reflection v1alpha, and v1 beside it (same messages, same field numbers; grpcio ships only v1alpha).

    Newer tools (grpcurl, buf curl) ask v1 first.
    """
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME, REFLECTION_V1), server)
    servicer = reflection.ReflectionServicer((*names, reflection.SERVICE_NAME, REFLECTION_V1))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1,
                                                                          {"ServerReflectionInfo": handler}),))
