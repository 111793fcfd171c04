"""Searches on a streaming replica (INDEX_READ_DSN) while writes stay on the primary.

A replica replays the primary's WAL a moment behind it: an image upserted a moment ago may be missing
from searches until then (a search by its id, SearchSimilar, and a collection the replica does not
know yet are asked of the primary instead). With INDEX_READ_MAX_LAG_S set, a search
first asks the replica how far its replay is behind, and goes to the primary while that is more. When the
replica is away, searches go to the primary and the replica is tried again every INDEX_READ_RETRY_S
seconds: it takes the searches back when it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from psycopg2.extensions import connection, cursor

from index_service.domain import NotFound, Unavailable
from index_service.pool import Pool, run_read
from semsearch_common.logs import Throttled

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds the replica's replay is behind: 0 when it has replayed all it received, else the age of the
# last transaction it replayed (an idle primary sends nothing, so a quiet replica is not "behind").
LAG_SQL = ("SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 "
           "ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END")


class Lagging(Exception):
    """The replica's replay is further behind than INDEX_READ_MAX_LAG_S."""


class Reads:
    """Runs reads on the replica when one is configured and answering, else on the primary."""

    def __init__(self, primary: Pool, read_dsn: str | None, size: int, connect_timeout_s: int,
                 setup: Callable[[connection], None], retry_s: float, max_lag_s: float = 0.0) -> None:
        self.primary = primary
        self.replica = Pool(read_dsn, size, connect_timeout_s, setup) if read_dsn else None
        self.retry_s, self.max_lag_s = retry_s, max_lag_s
        self._lock = threading.Lock()
        self._up = self.replica is not None
        self._retry_at = 0.0
        self.warnings = Throttled(log, 60.0)

    @property
    def on_replica(self) -> bool:
        """Whether searches go to the replica now (configured, and its last answer came)."""
        return self.replica is not None and self._up

    def run(self, work: Callable[[cursor], T], timeout_s: float | None) -> T:
        """`work`'s reads (pool.run_read) on the replica, or on the primary while the replica is away."""
        replica = self.replica
        if replica is None or not self._worth_trying():
            return run_read(self.primary, work, timeout_s)
        started = time.monotonic()
        try:
            result = run_read(replica, self._fresh(work), timeout_s)
        except Unavailable as err:
            self._lost(str(err))
        except NotFound:
            pass  # the replica may not have replayed that image or collection yet: the primary knows
        except Lagging as err:
            self._answered()
            self.warnings.log(logging.INFO, "lag", "%s: searching the primary meanwhile", err)
        else:
            self._answered()
            return result
        left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - started))
        return run_read(self.primary, work, left)

    def _fresh(self, work: Callable[[cursor], T]) -> Callable[[cursor], T]:
        """`work`, after checking the replica's lag (when a limit is set)."""
        if self.max_lag_s <= 0:
            return work

        def checked(cur: cursor) -> T:
            cur.execute(LAG_SQL)
            row = cur.fetchone()
            lag = float(row[0]) if row and row[0] is not None else 0.0
            if lag > self.max_lag_s:
                raise Lagging(f"the read replica is {lag:.1f} s behind (INDEX_READ_MAX_LAG_S={self.max_lag_s:g})")
            return work(cur)

        return checked

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
