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


class TimedCursor(cursor):
    """A cursor that sends its statement timeout in the same message as a statement, never on its own:
    each round trip costs a search about 0.15 ms, more under the gRPC server's threads (bench.search_path).

    In a transaction the first statement carries `SET LOCAL statement_timeout`, which holds to its end.
    In autocommit (`each` true) every statement carries it: a message of several statements is one
    implicit transaction, so the timeout and any other SET LOCAL of that message end with it.
    """

    deadline: float | None = None
    each = False
    sent = False  # a statement reached the server and came back

    def execute(self, query: Any, vars: Any = None) -> None:
        if not isinstance(query, str):
            raise TypeError("the service's statements are plain strings")
        if self.each or not self.sent:
            query = f"{self._timeout()}; {query}"
        super().execute(query, vars)
        self.sent = True

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        if self.each:
            raise RuntimeError("COPY runs in a transaction (run_tx), not in autocommit reads")
        if not self.sent:
            super().execute(self._timeout())
            self.sent = True
        super().copy_expert(sql, file, size)

    def _timeout(self) -> str:
        if self.deadline is None:
            return "SET LOCAL statement_timeout = 0"
        left = self.deadline - time.monotonic()
        if left <= 0.005:
            raise DeadlineExceeded("deadline exceeded before the database was asked")
        return f"SET LOCAL statement_timeout = {max(1, int(left * 1000) - 2)}"


def run_tx(pool: Pool, work: Callable[[cursor], T], timeout_s: float | None, attempts: int = 3) -> T:
    """Run `work` in one transaction; maps driver errors to domain errors and retries what is safe to.

    A stale pooled connection fails on the first statement; that attempt is retried on a fresh one.
    Deadlocks and serialization failures roll the whole transaction back, so they are retried too.
    """
    return _run(pool, work, timeout_s, attempts, autocommit=False)


def run_read(pool: Pool, work: Callable[[cursor], T], timeout_s: float | None, attempts: int = 3) -> T:
    """Run the reads of `work` each in its own implicit transaction, retried as run_tx's.

    Under READ COMMITTED every statement sees its own snapshot even inside a transaction, so a read
    loses nothing without one and saves the BEGIN and COMMIT round trips. A SET LOCAL must travel in
    the same execute as the statement it is for (filters.fetch sends them together).
    """
    return _run(pool, work, timeout_s, attempts, autocommit=True)


def _run(pool: Pool, work: Callable[[cursor], T], timeout_s: float | None, attempts: int, autocommit: bool) -> T:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for attempt in range(attempts):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0.005:
            raise DeadlineExceeded("deadline exceeded before the database was asked")
        cur: TimedCursor | None = None
        reused = False
        try:
            with pool.connection(remaining) as (conn, reused):
                conn.autocommit = autocommit
                with conn.cursor(cursor_factory=TimedCursor) as cur:
                    cur.deadline, cur.each = deadline, autocommit
                    result = work(cur)
                if not autocommit:
                    conn.commit()
                return result
        except errors.QueryCanceled as err:
            raise DeadlineExceeded(f"database statement cancelled: {_first_line(err)}") from None
        except RETRYABLE as err:
            log.info("retrying after %s", _first_line(err))
            continue
        except CONNECTION_ERRORS as err:
            # Nothing came back yet: a transaction committed nothing and a read changed nothing.
            if (cur is None or not cur.sent) and reused and attempt < attempts - 1:
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
