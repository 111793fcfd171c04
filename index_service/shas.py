"""Per-sha256 advisory locks and the cross-collection presence check that guard originals in the media store."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg2.extensions import cursor

from index_service import catalog


def lock_keys(cur: cursor, shas: Sequence[str], session: bool = False) -> None:
    """Per-sha256 advisory locks in one global order, so concurrent batches never deadlock."""
    fn = "pg_advisory_lock" if session else "pg_advisory_xact_lock"
    cur.execute(
        f"SELECT {fn}(k) FROM (SELECT DISTINCT hashtextextended(s, 0) AS k "
        "FROM unnest(%s::text[]) AS s ORDER BY k) AS keys",
        (list(shas),),
    )


def present(cur: cursor, shas: list[str]) -> set[str]:
    """The shas some collection holds a row of (originals are shared by sha256 across collections)."""
    found: set[str] = set()
    for table in catalog.tables(cur):
        cur.execute(f"SELECT sha256 FROM {table} WHERE sha256 = ANY(%s)", (shas,))
        found.update(r[0] for r in cur.fetchall())
    return found
