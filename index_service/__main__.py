"""Run the index service: `python -m index_service` (settings from INDEX_… variables)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from prometheus_client import start_http_server

from index_service.config import Config, ConfigError
from index_service.monitor import start_monitor
from index_service.pg import EmbeddedPostgres
from index_service.server import Deps, create_server

log = logging.getLogger("index_service")


def main() -> int:
    """Parse config, start Postgres if embedded, serve until SIGTERM/SIGINT."""
    try:
        config = Config.from_env()
    except ConfigError as err:
        print(f"index_service: bad configuration: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    embedded: EmbeddedPostgres | None = None
    dsn = config.dsn
    if dsn is None:
        embedded = EmbeddedPostgres(config.data_dir / "postgres", port=config.pg_port)
        dsn = embedded.start()
        log.info("embedded postgres: %s", dsn)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.host)
    deps = Deps.build(config, dsn)
    server, _port = create_server(config, deps)
    start_monitor(config, deps)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    log.info("shutting down (grace %.1f s)", config.grace_s)
    server.stop(config.grace_s).wait()
    deps.close()
    if embedded is not None and config.pg_stop_on_exit:
        embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
