"""Searches on a streaming replica (INDEX_READ_DSN) while writes stay on the primary.

A replica replays the primary's WAL a moment behind it: an image upserted a moment ago may be missing
from searches until then (a search by its id, SearchSimilar, and a collection the replica does not
know yet are asked of the primary instead). When the replica is away, searches go to the primary and
the replica is tried again every INDEX_READ_RETRY_S seconds: it takes the searches back when it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from psycopg2.extensions import connection, cursor

from index_service.domain import NotFound, Unavailable
from index_service.pool import Pool, run_tx
from semsearch_common.logs import Throttled

log = logging.getLogger(__name__)

T = TypeVar("T")


class Reads:
    """Runs read transactions on the replica when one is configured and answering, else on the primary."""

    def __init__(self, primary: Pool, read_dsn: str | None, size: int, connect_timeout_s: int,
                 setup: Callable[[connection], None], retry_s: float) -> None:
        self.primary = primary
        self.replica = Pool(read_dsn, size, connect_timeout_s, setup) if read_dsn else None
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._up = self.replica is not None
        self._retry_at = 0.0
        self.warnings = Throttled(log, 60.0)

    @property
    def on_replica(self) -> bool:
        """Whether searches go to the replica now (configured, and its last answer came)."""
        return self.replica is not None and self._up

    def run(self, work: Callable[[cursor], T], timeout_s: float | None) -> T:
        """`work` in one transaction on the replica, or on the primary while the replica is away."""
        replica = self.replica
        if replica is None or not self._worth_trying():
            return run_tx(self.primary, work, timeout_s)
        started = time.monotonic()
        try:
            result = run_tx(replica, work, timeout_s)
        except Unavailable as err:
            self._lost(str(err))
        except NotFound:
            pass  # the replica may not have replayed that image or collection yet: the primary knows
        else:
            self._answered()
            return result
        left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - started))
        return run_tx(self.primary, work, left)

    def close(self) -> None:
        """Close the replica's pooled connections."""
        if self.replica is not None:
            self.replica.clear()

    def _worth_trying(self) -> bool:
        with self._lock:
            return self._up or time.monotonic() >= self._retry_at

    def _lost(self, why: str) -> None:
        with self._lock:
            self._up = False
            self._retry_at = time.monotonic() + self.retry_s
        if self.replica is not None:
            self.replica.clear()
        self.warnings.log(logging.WARNING, "replica", "read replica unavailable, searching the primary "
                          "(retry every %.0f s): %s", self.retry_s, why)

    def _answered(self) -> None:
        with self._lock:
            was_up, self._up = self._up, True
        if not was_up:
            log.info("read replica answers again: searches go back to it")
