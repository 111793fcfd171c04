"""Embedded Postgres for tests: scratch clusters and throw-away databases."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2

from index_service.pg import EmbeddedPostgres

# Tests never need crash durability of the test cluster itself.
FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off", "max_connections": "300"}


@contextlib.contextmanager
def scratch_postgres(prefix: str, settings: dict[str, str] | None = None) -> Iterator[EmbeddedPostgres]:
    """A started embedded Postgres in a folder of its own, stopped and removed afterwards.

    For tests that stop and start their server, or must not share the session one.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root, settings=settings or FAST_SETTINGS)
    try:
        server.start()
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def create_database(pg: EmbeddedPostgres) -> str:
    """A new empty database on `pg`; returns its DSN."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(pg.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return pg.dsn(name)


def drop_database(pg: EmbeddedPostgres, dsn: str) -> None:
    """Drop a test database, closing whatever still uses it."""
    name = dsn.rsplit("dbname=", 1)[1]
    if not pg.is_running():
        return
    conn = psycopg2.connect(pg.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()
