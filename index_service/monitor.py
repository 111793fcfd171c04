"""The database monitor: migrates once Postgres is reachable, then keeps the health status in step with it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from index_service.config import Config
from index_service.domain import ServiceError
from index_service.metrics import DB_UP

if TYPE_CHECKING:
    from index_service.server import Deps

log = logging.getLogger(__name__)


class DbMonitor:
    """Migrates once the database is reachable, then tracks it: SERVING while it answers."""

    def __init__(self, config: Config, deps: Deps, set_serving: Callable[[bool], None]) -> None:
        self.config, self.deps, self.set_serving = config, deps, set_serving
        self._wake, self._stop = threading.Event(), threading.Event()
        self._last_sweep = 0.0
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
            if not repo.ready:
                collection = repo.open()
                log.info("database ready: backend %s, dim %d", collection.dialect.name, collection.dim)
            else:
                repo.ping(timeout_s=max(1.0, self.config.health_interval_s))
            if time.monotonic() - self._last_sweep > max(60.0, self.config.orphan_grace_s):
                self._last_sweep = time.monotonic()
                self._sweep()
            return True
        except ServiceError as err:
            log.warning("database not ready: %s", err)
        except Exception:  # a migration bug must not kill the monitor thread
            log.exception("database check failed")
        return False

    def _sweep(self) -> None:
        # A media store that cannot be cleaned (read-only, full) is an upload problem, not an outage.
        try:
            self.deps.media.sweep(self.deps.repo.with_orphans, self.config.orphan_grace_s)
        except OSError as err:
            log.error("orphan sweep of the media store failed: %s", err)

    def _set(self, up: bool) -> None:
        self.set_serving(up)
        DB_UP.set(1 if up else 0)


def start_monitor(config: Config, deps: Deps, set_serving: Callable[[bool], None]) -> DbMonitor:
    """Attach a started monitor to deps: requests that lose the database wake it, deps.close() stops it."""
    deps.monitor = DbMonitor(config, deps, set_serving)
    deps.monitor.start()
    return deps.monitor
