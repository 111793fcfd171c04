"""Run the index service: `python -m index_service` (settings from INDEX_… variables)."""

from __future__ import annotations

import logging
import sys

from index_service import pgtune
from index_service.config import Config, ConfigError
from index_service.pg import EmbeddedPostgres
from index_service.server import Deps, serve
from semsearch_common import logs, process
from semsearch_common.server import PortInUse, ensure_free

log = logging.getLogger("index_service")


def main() -> int:
    """Parse config, start Postgres if embedded, serve until SIGTERM/SIGINT."""
    try:
        config = Config.from_env()
    except ConfigError as err:
        return process.config_error("index_service", err)
    logs.setup(config.log_level, config.log_format)
    stop = process.stop_event()
    try:
        ensure_free(config.host, config.port)  # before starting Postgres: a second instance touches nothing
    except PortInUse as err:
        return process.startup_error("index_service", err)
    embedded: EmbeddedPostgres | None = None
    dsn = config.dsn
    if dsn is None:
        settings = pgtune.embedded_settings(config.pg_tune, dict(config.pg_settings))
        log.info("embedded postgres settings: %s", ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults")
        embedded = EmbeddedPostgres(config.data_dir / "postgres", port=config.pg_port, settings=settings)
        dsn = embedded.start()
        log.info("embedded postgres: %s", dsn)
    process.serve_metrics(config.metrics_port, config.host)
    deps = Deps.build(config, dsn, postgres=embedded)  # the monitor restarts a cluster that dies
    try:
        server = serve(config, deps)
    except PortInUse as err:
        deps.close()
        return process.startup_error("index_service", err)
    stop.wait()
    log.info("shutting down (drain %.1f s, grace %.1f s)", config.drain_s, config.grace_s)
    server.stop(config.grace_s, config.drain_s)
    deps.close()
    if embedded is not None and config.pg_stop_on_exit:
        embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
