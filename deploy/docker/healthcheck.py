"""Container health check: `healthcheck.py grpc HOST:PORT [SERVICE]` or `healthcheck.py http URL`; exit 0 if healthy."""

from __future__ import annotations

import sys
import urllib.request

TIMEOUT_S = 3.0


def grpc_ok(addr: str, service: str) -> bool:
    """Whether the gRPC health service at addr reports SERVING for service."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
        except grpc.RpcError as err:
            print(f"{addr} {service or '(server)'}: {err.code().name}", file=sys.stderr)
            return False
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{addr} {service or '(server)'}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}",
              file=sys.stderr)
        return False
    return True


def http_ok(url: str) -> bool:
    """Whether GET url answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
            status: int = reply.status
            return 200 <= status < 300
    except OSError as err:
        print(f"{url}: {err}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    """Run one check; 0 healthy, 1 not, 2 usage."""
    if len(argv) in (2, 3) and argv[0] == "grpc":
        return 0 if grpc_ok(argv[1], argv[2] if len(argv) == 3 else "") else 1
    if len(argv) == 2 and argv[0] == "http":
        return 0 if http_ok(argv[1]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
