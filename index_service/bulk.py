"""Bulk loads build the index after the rows: an announced large load into an empty collection defers it.

Measured on two cores (issue 14): upserts into an indexed collection ran at 450-570 rows/s, about
2,000 with the index built after the load. A caller announces its load's size (UpsertRequest.
expected_rows); when that is at least INDEX_BULK_MIN_ROWS and the collection is still empty, its
(empty) index is dropped, and built again at BuildIndex or once upserts have paused INDEX_BULK_IDLE_S.
A collection that holds rows keeps its index: dropping it would cost a rebuild of everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from psycopg2.extensions import cursor

from index_service import catalog, sizes
from index_service.catalog import Coll
from index_service.pool import Pool, one_row, run_tx

log = logging.getLogger(__name__)


def defer_index(cur: cursor, c: Coll) -> bool:
    """Drop the index of an empty collection (under its catalog row's lock); True if it did."""
    cur.execute("SELECT 1 FROM collections WHERE name = %s FOR UPDATE", (c.name,))
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM {c.table})")
    if one_row(cur)[0]:
        return False
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (c.index,))
    if not one_row(cur)[0]:
        return False
    cur.execute(f"DROP INDEX IF EXISTS {c.index}")
    return True


class BulkLoads:
    """Which collections' indexes wait for the end of a load, and when each last saw an upsert."""

    def __init__(self, pool: Pool, min_rows: int, idle_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool, self.min_rows, self.idle_s, self._clock = pool, min_rows, idle_s, clock
        self._lock = threading.Lock()
        self._deferred: set[str] = set()  # collections whose index waits for their upserts to pause
        self._in_flight: dict[str, int] = {}  # collection -> upserts under way
        # Any collection -> when its last upsert here ended (monotonic); deferring an index starts the clock too.
        self._ended: dict[str, float] = {}

    def starting(self, collection: str, expected_rows: int, timeout_s: float | None) -> None:
        """Before an upsert: defer the index of an empty collection a large load is about to fill."""
        if self.min_rows <= 0 or expected_rows < self.min_rows:
            return
        c, dropped = run_tx(self.pool, lambda cur: _defer(cur, collection), timeout_s)
        if dropped:
            log.info("bulk load of %d rows into empty collection %s: its index is built after the load",
                     expected_rows, c.name)
            with self._lock:
                self._deferred.add(c.name)
                self._ended[c.name] = self._clock()

    @contextmanager
    def upserting(self) -> Iterator[Callable[[str], None]]:
        """Around one upsert call: the function it gets marks the collection (a name, not an alias) busy
        until the call ends, so a deferred build waits for the pause after it."""
        busy: set[str] = set()

        def mark(collection: str) -> None:
            if collection not in busy:
                busy.add(collection)
                with self._lock:
                    self._in_flight[collection] = self._in_flight.get(collection, 0) + 1

        try:
            yield mark
        finally:
            now = self._clock()
            with self._lock:
                for name in busy:
                    self._in_flight[name] -= 1
                    self._ended[name] = now

    def wait_for(self, collection: str) -> None:
        """Defer `collection`'s index until its upserts pause (at start-up: a large one left unindexed)."""
        with self._lock:
            if collection not in self._deferred:
                self._deferred.add(collection)
                self._ended[collection] = self._clock()

    def built(self, collection: str) -> None:
        """The index of `collection` exists again."""
        with self._lock:
            self._deferred.discard(collection)

    def due(self) -> list[str]:
        """Collections whose upserts have paused long enough for their index to be built."""
        with self._lock:
            return sorted(name for name in self._deferred if self._quiet(name, self.idle_s))

    def quiet(self, collection: str, for_s: float) -> bool:
        """Whether no upsert into `collection` is under way here, nor ended (nor its index deferred) within
        `for_s` seconds."""
        with self._lock:
            return self._quiet(collection, for_s)

    def _quiet(self, collection: str, for_s: float) -> bool:
        ended = self._ended.get(collection)
        return not self._in_flight.get(collection) and (ended is None or self._clock() - ended >= for_s)

    def waiting(self) -> list[str]:
        """Collections whose index is deferred."""
        with self._lock:
            return sorted(self._deferred)


def _defer(cur: cursor, collection: str) -> tuple[Coll, bool]:
    c = catalog.resolve(cur, collection)
    return c, defer_index(cur, c)


def unindexed(cur: cursor, state: Callable[[cursor, Coll], str]) -> list[tuple[str, int]]:
    """The collections without a ready index (by `state`), with their estimated rows."""
    out = []
    for name in catalog.names(cur):
        c = catalog.resolve(cur, name)
        if state(cur, c) != "ready":
            out.append((name, sizes.estimate_rows(cur, c)))
    return out
