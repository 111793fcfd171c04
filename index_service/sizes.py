"""How big a collection is, at a cost that does not grow with it: exact when small, estimated when large.

Stats used to count the table, sum its media sizes and list its distinct models: three full scans,
141 ms at 300,000 rows and about 5 s projected at 10 million (issue 14). Here a collection is counted
exactly only up to EXACT_MAX rows (a LIMIT bounds the scan), and estimated above
that from Postgres' own statistics, which inserts and deletes keep current without any scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg2.extensions import cursor

from index_service.pool import one_row
from semsearch_common.errors import FailedPrecondition, Reason

if TYPE_CHECKING:  # catalog asks this module for its counts
    from index_service.catalog import Coll

# Up to this many rows a collection is counted (and its media summed) exactly.
EXACT_MAX = 10_000
# How far the live-row counter may exceed the rows the pages hold at the analyzed density (rows that
# came smaller than those ANALYZE saw) before it is taken for a double count.
DENSITY_SLACK = 1.25
# Rows read by the sampled media-size estimate (the pages holding about this many rows).
SAMPLE_ROWS = 2_000


@dataclass(frozen=True)
class Size:
    """A collection's row count and originals' bytes; `estimated` when both come from statistics."""

    count: int
    media_bytes: int
    estimated: bool


def size(cur: cursor, c: Coll, exact_max: int = EXACT_MAX) -> Size:
    """Exact up to `exact_max` rows, else estimated; never a scan of more than `exact_max` rows.

    The statistics are asked first: counting even a bounded 20,000 rows cost 27 ms on two busy cores.
    """
    rows = estimate_rows(cur, c)
    if rows <= exact_max:
        cur.execute(
            "SELECT count(*), coalesce(sum(CASE WHEN sha256 IS NOT NULL THEN size_bytes END), 0) "
            f"FROM (SELECT sha256, size_bytes FROM {c.table} LIMIT %s) AS head",
            (exact_max + 1,),
        )
        count, media = one_row(cur)
        if count <= exact_max:
            return Size(int(count), int(media), estimated=False)
        rows = exact_max + 1  # statistics behind (a crash reset them): at least what the count saw
    return Size(rows, int(rows * _mean_media_bytes(cur, c, rows)), estimated=True)


def count(cur: cursor, c: Coll, exact_max: int = EXACT_MAX) -> int:
    """The row count alone: exact up to `exact_max` rows, estimated above (as in `size`)."""
    rows = estimate_rows(cur, c)
    if rows > exact_max:
        return rows
    cur.execute(f"SELECT count(*) FROM (SELECT 1 FROM {c.table} LIMIT %s) AS head", (exact_max + 1,))
    exact = int(one_row(cur)[0])
    return exact if exact <= exact_max else exact_max + 1  # statistics behind: at least what was seen


def estimate_rows(cur: cursor, c: Coll) -> int:
    """Rows by the statistics: the live-row counter inserts and deletes keep, checked against the rows the
    table's pages hold now at the density its last VACUUM or ANALYZE saw (what the planner itself assumes).

    pg_stat's n_live_tup follows every committed insert and delete (flushed within about a second). It
    restarts from nothing after a crash, and it counts a load twice when an ANALYZE ran before the
    loading connection flushed its counts (ANALYZE sets the counter, the late flush adds the load again).
    In both cases the pages tell: a count above what they can hold is not believed.
    The backend's cached statistics are dropped first: an autocommit connection (pool.run_read) can
    otherwise keep reading the counter as it first saw it.
    """
    cur.execute(
        "SELECT pg_stat_clear_snapshot(); SELECT coalesce(s.n_live_tup, 0), c.reltuples, c.relpages, "
        "pg_relation_size(c.oid) / current_setting('block_size')::bigint "
        "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = to_regclass(%s)",
        (c.table,),
    )
    row = cur.fetchone()
    if row is None:
        return 0
    live, reltuples, relpages, pages = int(row[0]), float(row[1]), int(row[2]), int(row[3])
    if reltuples <= 0 or relpages <= 0:
        return live  # never analyzed: the counter is all there is
    held = reltuples / relpages * pages
    return live if 0 < live <= held * DENSITY_SLACK else int(held)


def check_exact(cur: cursor, c: Coll, max_rows: int, matching: int | None = None) -> None:
    """Refuse an exact search of more than `max_rows` rows (0: no limit) before it outlives its deadline:
    the collection's rows, or the `matching` rows a filter is expected to keep.

    An exact search is a parallel sequential scan: 1.2 s warm and 5.6 s cold at 300,000 rows on two
    cores, past the gateway's 10 s deadline from about 2-3 million rows. A clear refusal beats a timeout.
    """
    if max_rows <= 0:
        return
    rows = estimate_rows(cur, c) if matching is None else matching
    if rows > max_rows:
        what = "holds" if matching is None else "has a filter that keeps"
        raise FailedPrecondition(
            f"collection {c.name!r} {what} about {rows} rows; exact search is limited to {max_rows} "
            "(INDEX_EXACT_MAX_ROWS): search without exact, or narrow the filter",
            reason=Reason.EXACT_SEARCH_TOO_LARGE)


def _mean_media_bytes(cur: cursor, c: Coll, rows: int) -> float:
    """Mean original size per row from a page sample (rows without a stored original count as 0)."""
    percent = min(100.0, 100.0 * SAMPLE_ROWS / max(rows, 1))
    cur.execute(
        f"SELECT avg(CASE WHEN sha256 IS NOT NULL THEN size_bytes ELSE 0 END) FROM {c.table} "
        "TABLESAMPLE SYSTEM (%s) REPEATABLE (14)",
        (percent,),
    )
    mean = one_row(cur)[0]
    return float(mean) if mean is not None else 0.0


def models(cur: cursor, c: Coll) -> list[str]:
    """The collection's recorded model, and "unknown" while rows adopted from the prototype remain.

    Upserts refuse any other model, so the recorded one is every stored vector's model except the
    prototype's rows, which carry no sha256 (the unique index on sha256 answers that without a scan).
    """
    out = [c.model_id] if c.model_id is not None else []
    cur.execute(f"SELECT model_id FROM {c.table} WHERE sha256 IS NULL LIMIT 1")
    row = cur.fetchone()
    if row is not None and row[0] not in out:
        out.append(str(row[0]))
    return sorted(out)
