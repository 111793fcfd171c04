"""Run the gateway: `python -m gateway` (settings from GATEWAY_* variables)."""

from __future__ import annotations

import logging
import resource
import socket
import sys

from gateway.config import ConfigError, GatewayConfig
from semsearch_common import logs, process


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound as uvicorn would; OSError naming the port when that fails."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"port {port} on {host}: {err.strerror or err}") from None
    return sock


def allow_descriptors(wanted: int) -> None:
    """Raise the soft limit on open files towards `wanted` (each connection is one), as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logging.getLogger("gateway").warning("only %d open files allowed: fewer than GATEWAY_MAX_CONNECTIONS "
                                             "connections will fit", target)


def main() -> int:
    """Read the config, bind the port, then serve until interrupted."""
    try:
        config = GatewayConfig.from_env()
    except ConfigError as err:
        return process.config_error("gateway", err)
    logs.setup(config.log_level, config.log_format)
    # Bound here, before the slow imports and uvicorn's start: a taken port must stop the process at
    # once with one line naming it, where uvicorn would log its own way after the app's start-up.
    try:
        sock = listen(config.host, config.port)
    except OSError as err:
        return process.startup_error("gateway", err.strerror)
    import uvicorn  # seconds of imports (FastAPI, gRPC): only once the port is ours

    from gateway.app import create_app
    from gateway.guard import server_config
    allow_descriptors(config.max_connections + 256)  # the rest: gRPC channels, files, logs
    # log_config=None: uvicorn's own loggers go through the handler logs.setup installed (text or JSON).
    server = uvicorn.Server(server_config(
        create_app(config), config, host=config.host, port=config.port, log_level=config.log_level.lower(),
        log_config=None, access_log=False, proxy_headers=False, server_header=False, timeout_graceful_shutdown=5))
    with sock:
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown, as uvicorn.run expects
            pass
    return 0 if server.started else 1  # as uvicorn.run: a failed app start-up is a failed start


if __name__ == "__main__":
    sys.exit(main())
