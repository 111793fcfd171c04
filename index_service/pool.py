"""A small blocking connection pool for psycopg2 that drops dead connections and reconnects."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2
from psycopg2 import errors
from psycopg2.extensions import connection as Connection  # Pool.connection would shadow the plain name
from psycopg2.extensions import cursor

from index_service.domain import DeadlineExceeded, ServiceError, Unavailable

log = logging.getLogger(__name__)

# Errors that mean "this connection or the server is gone" (QueryCanceled is an OperationalError too).
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# UndefinedTable: a collection dropped between resolving its name and reading it; a retry resolves again.
RETRYABLE = (errors.DeadlockDetected, errors.SerializationFailure, errors.UndefinedTable)

T = TypeVar("T")


class Pool:
    """At most `size` connections; a caller waits for a free one until its deadline."""

    def __init__(self, dsn: str, size: int, connect_timeout_s: int, setup: Callable[[Connection], None]) -> None:
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self.setup = setup
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def connect(self) -> Connection:
        """A new connection, set up for this service."""
        conn = psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout_s, application_name="index_service")
        try:
            self.setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def connection(self, timeout_s: float | None) -> Iterator[tuple[Connection, bool]]:
        """A connection and whether it was reused; dropped instead of returned when it broke."""
        if not self._slots.acquire(timeout=timeout_s if timeout_s is not None else 60.0):
            raise DeadlineExceeded("no database connection became free in time")
        conn: Connection | None = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self.connect()
            yield conn, reused
        except CONNECTION_ERRORS:
            if conn is None or conn.closed:
                # The server likely restarted: every idle connection is dead too.
                self.clear()
                conn = None
            raise
        finally:
            if conn is not None:
                self._release(conn)
            self._slots.release()

    def _release(self, conn: Connection) -> None:
        if conn.closed:
            return
        try:
            conn.rollback()
        except CONNECTION_ERRORS:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def run_tx(pool: Pool, work: Callable[[cursor], T], timeout_s: float | None, attempts: int = 3) -> T:
    """Run `work` in one transaction; maps driver errors to domain errors and retries what is safe to.

    A stale pooled connection fails on the first statement; that attempt is retried on a fresh one.
    Deadlocks and serialization failures roll the whole transaction back, so they are retried too.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for attempt in range(attempts):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0.005:
            raise DeadlineExceeded("deadline exceeded before the database was asked")
        started = reused = False
        try:
            with pool.connection(remaining) as (conn, reused), conn.cursor() as cur:
                ms = 0 if remaining is None else max(1, int(remaining * 1000) - 2)
                cur.execute(f"SET LOCAL statement_timeout = {ms}")
                started = True
                result = work(cur)
                conn.commit()
                return result
        except errors.QueryCanceled as err:
            raise DeadlineExceeded(f"database statement cancelled: {_first_line(err)}") from None
        except RETRYABLE as err:
            log.info("retrying after %s", _first_line(err))
            continue
        except CONNECTION_ERRORS as err:
            if not started and reused and attempt < attempts - 1:
                continue
            raise Unavailable(f"database unavailable: {_first_line(err)}") from None
        except ServiceError:
            raise
    raise Unavailable("database kept failing the transaction (deadlocks)")


def one_row(cur: cursor) -> tuple[Any, ...]:
    """The row of a query that always yields exactly one (an aggregate, a SELECT without FROM)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"expected one row from {cur.query!r}")
    return row


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
