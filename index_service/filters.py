"""Search SQL shared by both dialects: the WHERE clause of every filter, the candidate query, and the
relevance cutoff, date sort and offset applied to the candidates."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from psycopg2.extensions import cursor

from index_service.dialects import Dialect
from index_service.domain import Hit, SearchQuery
from index_service.photos import label_of

# What every candidate row carries; the distance to the query follows as the last column.
HIT_COLUMNS = "id, label, source, width, height, tags, taken_at, taken_offset_minutes"


@dataclass(frozen=True)
class Plan:
    """The statements of one search: settings and query of the index scan, and the exact fallback."""

    settings: list[str]
    sql: str
    exact_settings: list[str]
    exact_sql: str
    params: list[Any]
    limit: int  # candidates asked for; fewer from the index scan means it ran out (use the exact scan)
    exact_params: list[Any]
    delta: bool = False  # `sql` also scans the unindexed rows; its last column marks theirs (search_sql)


def conditions(q: SearchQuery) -> tuple[list[str], list[Any]]:
    """The WHERE conditions of a query's filters and their parameters, in order."""
    f = q.photo
    where: list[str] = []
    params: list[Any] = []
    any_tags = sorted({*q.labels, *f.tags_any})  # a filter's labels are more tags_any
    if any_tags:
        where.append("tags && %s::text[]")  # the GIN index answers && and @>
        params.append(any_tags)
    if f.tags_all:
        where.append("tags @> %s::text[]")
        params.append(sorted(set(f.tags_all)))
    if q.source:
        where.append("source = %s")
        params.append(q.source)
    if f.taken_from is not None:
        where.append("taken_at >= %s")
        params.append(f.taken_from)
    if f.taken_until is not None:
        where.append("taken_at < %s")
        params.append(f.taken_until)
    if f.camera:
        where.append("(lower(camera_make) = lower(%s) OR lower(camera_model) = lower(%s))")
        params += [f.camera, f.camera]
    if f.has_location is not None:
        where.append("latitude IS NOT NULL" if f.has_location else "latitude IS NULL")
    if f.box is not None:
        b = f.box
        where.append("latitude BETWEEN %s AND %s")
        params += [b.south, b.north]
        if b.west <= b.east:
            where.append("longitude BETWEEN %s AND %s")
        else:  # across the antimeridian: east of `west` or west of `east`
            where.append("(longitude >= %s OR longitude <= %s)")
        params += [b.west, b.east]
    return where, params


def matching_rows(cur: cursor, table: str, q: SearchQuery) -> int:
    """The planner's estimate of the rows with a vector that a query's filters keep: statistics, no scan."""
    where, params = conditions(q)
    cur.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE {' AND '.join(['v IS NOT NULL', *where])}",
                params)
    row = cur.fetchone()
    return int(row[0][0]["Plan"]["Plan Rows"]) if row else 0


FIRST_DATE_FETCH = 100  # rows a date sort fetches first; 4x more while the last is still relevant


def candidates(q: SearchQuery, max_k: int) -> int:
    """Rows to fetch first by relevance: the page and what it skips (a date sort: at least FIRST_DATE_FETCH)."""
    wanted = q.order.offset + q.k
    if q.order.by_date:
        wanted = min(max_k, max(FIRST_DATE_FETCH, 2 * wanted))
    return wanted + (1 if q.exclude_id is not None else 0)  # the query image itself is dropped later


def search_sql(dialect: Dialect, table: str, where: list[str], limit: int, half: bool = False,
               columns: str = HIT_COLUMNS, delta: bool = False) -> str:
    """Nearest rows by cosine distance (`<=>`, the index's order) under the conditions.

    With `delta` (the dialect's graph_delta), two scans in one statement: the graph's nearest rows and,
    scanned exactly through the partial index on the flag, the nearest of the rows it has not taken in
    yet (migrations.unindexed_rows); a last column says which (true: unindexed). The query vector is
    then written once, in a WITH both read: Postgres parses a 512-d vector's text in 0.1-0.2 ms here, and
    four copies would cost a search more than the second scan does. Parameters: search_params'."""
    def nearest(conditions: list[str], dist: str, marker: str = "") -> str:
        clause = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        return f"SELECT {columns}, {dist}{marker} FROM {table} {clause}ORDER BY {dist} LIMIT {int(limit)}"

    if not delta:
        return nearest(where, f"v <=> %s{dialect.cast(half)}")
    dist = "v <=> (SELECT v FROM q)"  # an InitPlan: pgvector's index scan orders by it like a parameter
    return (f"WITH q AS (SELECT %s{dialect.cast(half)} AS v) "
            f"({nearest(['NOT unindexed', *where], dist, ', false')}) UNION ALL "
            f"({nearest(['unindexed', 'v IS NOT NULL', *where], dist, ', true')})")


def search_params(vec: Any, params: list[Any], delta: bool = False) -> list[Any]:
    """The parameters of search_sql: the vector around the conditions' own, or with `delta` the vector
    once and the conditions' own for each scan."""
    return [vec, *params, *params] if delta else [vec, *params, vec]


def plan(dialect: Dialect, table: str, q: SearchQuery, ef: int, limit: int, half: bool = False) -> Plan:
    """Every statement of one fetch of `limit` candidates, so both dialects' SQL can be checked without a server."""
    where, params = conditions(q)
    settings = dialect.search_settings(limit, ef, q.filtered)
    if not q.filtered:
        # Vectors live out of line (TOAST), so the heap looks small and, once ef_search is large
        # (200 at 30k rows), the planner prefers a full scan + sort: 190 ms instead of 3.
        settings.append("SET LOCAL enable_seqscan = off")
    vec, delta = dialect.literal(q.vector), dialect.graph_delta
    return Plan(settings=settings, sql=search_sql(dialect, table, where, limit, half, delta=delta),
                exact_settings=["SET LOCAL enable_indexscan = off"],
                exact_sql=search_sql(dialect, table, ["v IS NOT NULL", *where], limit, half),
                params=search_params(vec, params, delta), limit=limit, exact_params=search_params(vec, params),
                delta=delta)


def fetch(cur: cursor, p: Plan, exact: bool) -> tuple[list[tuple[Any, ...]], bool]:
    """The candidate rows, through the index or by an exact scan (asked, or when the index ran out), and
    whether the index ran out."""
    rows: list[tuple[Any, ...]] = []
    ran_out = False
    if not exact:
        rows = _query(cur, p.settings, p.sql, p.params)
        from_graph = sum(1 for r in rows if not r[-1]) if p.delta else len(rows)
        if p.delta:  # the nearest of the graph's and the unindexed rows' (distance: the column before the marker)
            rows = sorted(rows, key=lambda r: r[-2])[: p.limit]
        ran_out = from_graph < p.limit
    if exact or ran_out:
        # Asked for, or the graph ran out before the candidates were found (a selective filter).
        rows = _query(cur, p.exact_settings, p.exact_sql, p.exact_params)
    return rows, ran_out


def _query(cur: cursor, settings: list[str], sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The settings and the query in one round trip (the query's rows come back; the settings have no `%`):
    each round trip costs a search about 0.15 ms (bench.search_path)."""
    cur.execute("; ".join([*settings, sql]), params)
    return cur.fetchall()


def search(cur: cursor, dialect: Dialect, table: str, q: SearchQuery, ef: int, max_k: int,
           default: tuple[float | None, float | None], half: bool = False,
           selective: bool = False) -> tuple[list[Hit], str]:
    """The hits of a query and the plan that found them (a label of SEARCH_PLANS); a date sort fetches 4x
    more candidates while the last one is still relevant, up to max_k (its pool), so a tight cutoff costs
    a small fetch and a loose one at most max_k rows.
    `selective`: the filters keep few rows, so they are scanned exactly instead of walking the graph."""
    limit = candidates(q, max_k)
    pool = max_k + (1 if q.exclude_id is not None else 0)
    exact = q.exact or selective
    used = ""
    while True:
        rows, ran_out = fetch(cur, plan(dialect, table, q, ef, limit, half), exact)
        used = used or ("selective_filter" if selective else "exact" if q.exact
                        else "index_ran_out" if ran_out else "index")
        hits = to_hits(rows, q.exclude_id)
        if not q.order.by_date or not hits or len(rows) < limit or limit >= pool:
            break
        if hits[-1].score < threshold(hits[0].score, *bounds(q, default)):
            break
        limit = min(pool, limit * 4)
    return arrange(hits, q, *default), used


def bounds(q: SearchQuery, default: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    """The query's cutoff (gap, fraction), else the server's."""
    return (q.order.gap, q.order.fraction) if q.order.has_cutoff else default


def to_hits(rows: list[tuple[Any, ...]], exclude_id: int | None) -> list[Hit]:
    """Candidate rows as hits, best first (relaxed-order iterative scans may be slightly out of order)."""
    hits = [Hit(r[0], 1.0 - float(r[8]), label_of(r[1], r[5] or []), r[2], r[3], r[4], tuple(r[5] or ()), r[6],
                taken_offset_minutes=r[7])
            for r in rows if r[8] is not None and r[0] != exclude_id]
    hits.sort(key=lambda h: (-h.score, h.id))
    return hits


def threshold(best: float, gap: float | None, fraction: float | None) -> float:
    """The lowest relevant score: within `gap` of the best and at least `fraction` of it; the best always counts."""
    bounds = [best - gap] if gap is not None else []
    if fraction is not None:
        bounds.append(best * fraction)
    return min(best, max(bounds)) if bounds else -2.0


def arrange(hits: list[Hit], q: SearchQuery, default_gap: float | None,
            default_fraction: float | None = None) -> list[Hit]:
    """min_score, the relevance cutoff, the sort and the offset applied to candidates sorted best first.

    With a date sort only the relevant hits remain (the server's default cutoff when none is asked);
    with the relevance sort and a cutoff asked, hits below it stay and are marked below_cutoff.
    """
    if q.min_score is not None:
        hits = [h for h in hits if h.score >= q.min_score]
    o = q.order
    gap, fraction = bounds(q, (default_gap, default_fraction))
    if hits and (o.has_cutoff or o.by_date):
        low = threshold(hits[0].score, gap, fraction)
        if o.by_date:
            hits = [h for h in hits if h.score >= low]
            sign = -1 if o.sort == "date_desc" else 1
            # Undated images last in both directions; equal dates by relevance.
            hits.sort(key=lambda h: (h.taken_at is None, sign * (h.taken_at or 0), -h.score, h.id))
        else:
            hits = [replace(h, below_cutoff=h.score < low) for h in hits]
    return hits[o.offset: o.offset + q.k]
