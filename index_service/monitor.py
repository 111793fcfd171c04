"""The database monitor: migrates once Postgres is reachable, then keeps the health status in step with it.

It does nothing that grows with the collection: the media sweep and deferred index builds run on
index_service.background's thread.

When the service runs its own Postgres, the monitor also restarts that cluster in place if its postmaster
dies: the gRPC server, its clients' channels and the pool's DSN all stay as they are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from index_service.background import Background
from index_service.config import Config
from index_service.domain import ServiceError
from index_service.metrics import DB_UP, PG_RESTARTS
from index_service.pg import EmbeddedPostgresError
from semsearch_common.logs import Throttled

if TYPE_CHECKING:
    from index_service.server import Deps

log = logging.getLogger(__name__)

# During an outage every failed request wakes the monitor: one warning per cause per interval is plenty.
WARN_INTERVAL_S = 10.0


class DbMonitor:
    """Migrates once the database is reachable, then tracks it: SERVING while it answers."""

    def __init__(self, config: Config, deps: Deps, set_serving: Callable[[bool], None]) -> None:
        self.config, self.deps, self.set_serving = config, deps, set_serving
        self._wake, self._stop = threading.Event(), threading.Event()
        self._up: bool | None = None
        self.warnings = Throttled(log, WARN_INTERVAL_S)
        self._thread = threading.Thread(target=self._loop, name="index-db-monitor", daemon=True)

    def start(self) -> None:
        """Start checking in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop checking."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def lost(self) -> None:
        """A request saw the database go away: report NOT_SERVING now and re-check soon."""
        self._set(False)
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._set(self._check())
            self._wake.wait(self.config.health_interval_s)
            self._wake.clear()

    def _check(self) -> bool:
        repo = self.deps.repo
        try:
            self._revive()
            if not repo.ready:
                collection = repo.open()
                log.info("database ready: backend %s, dim %d", collection.dialect.name, collection.dim)
            else:
                repo.ping(timeout_s=max(1.0, self.config.health_interval_s))
            return True
        except ServiceError as err:
            self.warnings.log(logging.WARNING, str(err), "database not ready: %s", err)
        except EmbeddedPostgresError as err:
            self.warnings.log(logging.ERROR, "restart", "embedded postgres did not restart: %s", err)
        except Exception:  # a migration bug must not kill the monitor thread
            log.exception("database check failed")
        return False

    def _revive(self) -> None:
        """Restart the embedded cluster if its postmaster is gone (killed, crashed, stopped behind our back)."""
        postgres = self.deps.postgres
        if postgres is None or postgres.is_running():
            return
        self._set(False)
        self.warnings.log(logging.WARNING, "postmaster gone", "embedded postgres is not running; restarting it "
                          "on port %d", postgres.port)
        if postgres.revive():
            PG_RESTARTS.inc()
            self.deps.repo.close()  # pooled connections died with the old server
            log.warning("embedded postgres restarted (postmaster pid %s)", postgres.postmaster_pid())

    def _set(self, up: bool) -> None:
        if up and self._up is False:
            log.info("database reachable again")
        self._up = up
        self.set_serving(up)
        DB_UP.set(1 if up else 0)


def start_monitor(config: Config, deps: Deps, set_serving: Callable[[bool], None]) -> DbMonitor:
    """Attach a started monitor to deps: requests that lose the database wake it, deps.close() stops it."""
    deps.monitor = DbMonitor(config, deps, set_serving)
    deps.monitor.start()
    deps.background = Background(config, deps.repo, deps.media)
    deps.background.start()
    return deps.monitor
