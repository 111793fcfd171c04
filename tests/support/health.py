"""Waiting on gRPC health by its Watch stream: the server tells us when its status changes, no polling."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_status(channel: grpc.Channel, wanted: int = SERVING, service: str = "", timeout_s: float = 30) -> None:
    """Block until health of `service` reports `wanted`; AssertionError when the time is up first."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service),
                                                        timeout=timeout_s)
    try:
        for reply in watch:
            if reply.status == wanted:
                return
    except grpc.RpcError as err:
        raise AssertionError(f"health of {service!r} never became {wanted}: {err.code().name}") from None
    finally:
        watch.cancel()
    raise AssertionError(f"the health watch of {service!r} ended before it became {wanted}")
