"""What every service's __main__ does around its work: configuration errors, signals, the metrics port."""

from __future__ import annotations

import signal
import sys
import threading

from prometheus_client import start_http_server


def config_error(service: str, message: object) -> int:
    """Print one line naming the bad setting and return the exit status for it (2)."""
    print(f"{service}: bad configuration: {message}", file=sys.stderr)
    return 2


def startup_error(service: str, message: object) -> int:
    """Print one line saying why the service cannot start and return the exit status for it (1)."""
    print(f"{service}: cannot start: {message}", file=sys.stderr)
    return 1


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (call from the main thread)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def serve_metrics(port: int, host: str) -> None:
    """Expose Prometheus /metrics on host:port; 0 leaves it off."""
    if port:
        start_http_server(port, addr=host)
