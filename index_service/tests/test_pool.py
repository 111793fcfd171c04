"""The pool's transactions and autocommit reads on a real Postgres: timeouts, scope, stale connections."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import psycopg2
import pytest
from psycopg2.extensions import cursor

from index_service.domain import DeadlineExceeded
from index_service.pool import Pool, run_read, run_tx

Run = Callable[..., Any]  # run_tx or run_read


@pytest.fixture
def pool(pg_dsn: str) -> Iterator[Pool]:
    p = Pool(pg_dsn, 2, 5, setup=lambda conn: None)
    yield p
    p.clear()


def _rows(cur: cursor, sql: str) -> list[tuple[object, ...]]:
    cur.execute(sql)
    return cur.fetchall()


@pytest.mark.parametrize("run", [run_tx, run_read])
def test_every_statement_is_bounded_by_the_deadline(pool: Pool, run: Run) -> None:
    def work(cur: cursor) -> None:
        _rows(cur, "SELECT 1")  # the second statement too, not only the one that carried the SET
        _rows(cur, "SELECT pg_sleep(3)")

    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        run(pool, work, 0.3)
    assert time.monotonic() - started < 2.0


def test_reads_run_without_a_transaction_and_their_settings_end_with_each_message(pool: Pool) -> None:
    def read(cur: cursor) -> tuple[object, ...]:
        first = _rows(cur, "SET LOCAL work_mem = '77MB'; SELECT transaction_timestamp(), current_setting('work_mem')")
        time.sleep(0.01)
        second = _rows(cur, "SELECT transaction_timestamp(), current_setting('work_mem'), "
                            "current_setting('statement_timeout')")
        return first[0] + second[0]

    t1, mem1, t2, mem2, timeout = run_read(pool, read, 30.0)
    assert mem1 == "77MB" and mem2 != "77MB"  # SET LOCAL lasted its own message only
    assert t1 != t2  # each statement its own implicit transaction: no BEGIN, no COMMIT
    assert timeout.endswith("s") and timeout != "0"  # the deadline travelled with the statement

    def written(cur: cursor) -> tuple[object, ...]:
        a = _rows(cur, "SELECT transaction_timestamp()")[0][0]
        time.sleep(0.01)
        return a, _rows(cur, "SELECT transaction_timestamp(), current_setting('statement_timeout')")[0]

    a, (b, tx_timeout) = run_tx(pool, written, 30.0)
    assert a == b and tx_timeout != "0"  # one transaction; its first statement's SET LOCAL holds to the end

    # Neither leaves anything behind on the pooled connection.
    with pool.connection(5.0) as (conn, reused), conn.cursor() as cur:
        assert reused
        assert _rows(cur, "SELECT current_setting('statement_timeout')")[0][0] == "0"


@pytest.mark.parametrize("run", [run_tx, run_read])
def test_a_pooled_connection_the_server_dropped_is_replaced(pool: Pool, run: Run) -> None:
    pid = run(pool, lambda cur: _rows(cur, "SELECT pg_backend_pid()")[0][0], 5.0)
    with closing(psycopg2.connect(pool.dsn)) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)
    assert run(pool, lambda cur: _rows(cur, "SELECT pg_backend_pid()")[0][0], 5.0) != pid


def test_statements_are_plain_strings_and_reads_do_not_copy(pool: Pool) -> None:
    with pytest.raises(TypeError):
        run_read(pool, lambda cur: cur.execute(b"SELECT 1"), 5.0)
    with pytest.raises(RuntimeError, match="COPY"):
        run_read(pool, lambda cur: cur.copy_expert("COPY (SELECT 1) TO STDOUT", open("/dev/null", "w")), 5.0)
