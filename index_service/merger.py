"""Rows upserted into an indexed collection wait beside the graph; a background step hands them to it.

pgvector inserts a row into its HNSW graph in 2-4 ms on two cores (540 rows/s at 300,000 rows, 340 at
1,000,000: bench.index), while an upsert into a collection without a graph stores about 1,200 rows/s.
So where the graph leaves out the rows marked unindexed (PgVector.index_ddl: `WHERE NOT unindexed`), an
upsert stores its new rows unindexed as long as at most INDEX_UNINDEXED_MAX_ROWS would then wait (and the
graph holds at least as many).
Searches scan the waiting rows exactly beside the graph (filters.search_sql), so they are found at once;
`merge` hands them to the graph a batch at a time once upserts pause (clearing the flag makes pgvector
insert the row). Past the limit an upsert writes into the graph itself, at the graph's own pace: no search
ever scans more than about that many rows exactly (about 2 us a row: bench.index).
"""

from __future__ import annotations

from psycopg2.extensions import cursor

from index_service.catalog import Coll
from index_service.dialects import Dialect
from index_service.pool import one_row


def may_wait(cur: cursor, dialect: Dialect, c: Coll, rows: int, limit: int) -> bool:
    """Whether `rows` new rows of `c` may wait beside its graph: the graph is ready, leaves unindexed rows
    out and holds at least `limit` rows (into a smaller graph a row goes about as fast), and at most
    `limit` rows would wait then."""
    if not dialect.graph_delta or rows > limit:
        return False
    cur.execute(
        "SELECT (SELECT i.indisvalid AND i.indpred IS NOT NULL AND r.reltuples >= %s FROM pg_index i "
        "JOIN pg_class r ON r.oid = i.indexrelid WHERE i.indexrelid = to_regclass(%s)), "
        f"(SELECT count(*) FROM (SELECT 1 FROM {c.table} WHERE unindexed LIMIT %s) AS w)",
        (limit, c.index, limit + 1))
    ready, waiting = one_row(cur)
    return bool(ready) and waiting + rows <= limit


def waiting(cur: cursor, c: Coll) -> int:
    """Rows of `c` waiting for the graph (through the partial index on the flag: at most the limit's worth)."""
    cur.execute(f"SELECT count(*) FROM {c.table} WHERE unindexed")
    return int(one_row(cur)[0])


def merge(cur: cursor, c: Coll, batch: int) -> int:
    """Hand up to `batch` waiting rows of `c` to its graph, oldest first, passing over rows that another
    transaction holds; returns how many."""
    cur.execute(f"SELECT id FROM {c.table} WHERE unindexed ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (batch,))
    ids = [r[0] for r in cur.fetchall()]
    if ids:  # no empty UPDATE: it would still fire the tag counts' statement trigger
        cur.execute(f"UPDATE {c.table} SET unindexed = false WHERE id = ANY(%s)", (ids,))
    return len(ids)
