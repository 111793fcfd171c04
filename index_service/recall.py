"""Search breadth from a recall target: a first guess from a collection's size, then measured and adjusted.

An HNSW index answers from a bounded beam (pgvector's `hnsw.ef_search`, Lantern's index option `ef`).
A beam that finds 998 of 1,000 true neighbours at 30,000 rows finds 926 at 300,000, and nothing says so.
So the service keeps a breadth per collection: it starts from `initial_ef(rows)` and a background keeper
measures recall@10 against exact search on a small sample of stored vectors; when the estimate falls below
the target it widens the beam (pgvector: the next search; Lantern: a concurrent rebuild with the new `ef`).
The same exact answers also score one narrower beam (the exact scans are the cost; an extra index search
is almost free), and where the breadth is a per-query setting (pgvector) the keeper narrows to it when
even its estimate less one standard error holds the target: a first guess that was too wide comes down
step by step; with that margin, and never narrowing to a breadth that once missed, noise around the target
cannot make it swing back and forth.
Each collection's breadth and last estimate are kept in `search_breadths`, so a restarted service (or a
second replica) searches at the measured breadth at once instead of guessing and measuring again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol, TypeVar

import numpy as np
from psycopg2.extensions import cursor

from index_service import catalog, filters, sizes
from index_service.catalog import Coll
from index_service.dialects import Dialect
from index_service.pool import one_row
from semsearch_common.worker import Worker

log = logging.getLogger(__name__)
T = TypeVar("T")

K = 10  # recall@10: what a result page shows first
MAX_EF = 1000  # pgvector's limit for hnsw.ef_search (Lantern's ef stops at 400: the dialect clamps)
SMALL = 1_000  # below this an index scan with ef >= rows is already exact: nothing to measure
GROWTH = 0.1  # re-measure once a collection grew by a tenth since the last estimate
EXPONENT = 0.8  # the breadth a target needs grows slower than the rows (a first guess that errs wide)
MIN_VARIANCE = 0.0025  # per-query variance assumed at least: 20 perfect queries do not prove 1.000


@dataclass(frozen=True)
class Estimate:
    """One measurement: mean recall@K of `queries` sampled vectors at breadth `ef`."""

    recall: float
    queries: int
    ef: int
    rows: int
    at: float  # time.time() when it finished
    seconds: float
    stderr: float = 0.0  # standard error of `recall` over the queries
    narrower: Estimate | None = None  # the same queries at a narrower breadth, when one was scored


def initial_ef(rows: int, floor: int) -> int:
    """A first breadth for `rows` rows: `floor` up to 50k rows, then growing a little slower than the rows.

    From bench.index on clustered 512-d vectors (m=16, ef_construction=64): ef 100 holds recall@10 >= 0.98
    to about 100,000 rows (0.983) and gives 0.926 at 300,000, where ef 400 gives 0.981. The keeper narrows
    a guess that proves wider than needed.
    """
    if rows <= 50_000:
        return floor
    return min(MAX_EF, max(floor, int(floor * (rows / 50_000) ** EXPONENT)))


def widened(ef: int) -> int:
    """The next breadth to try after a miss: half again as wide, at most MAX_EF."""
    return min(MAX_EF, math.ceil(ef * 1.5))


def narrowed(ef: int, floor: int) -> int:
    """The next narrower breadth to score: a step of widened() back, not below `floor`."""
    return max(floor, math.floor(ef / 1.5))


def sample_ids(cur: cursor, c: Coll, rows: int, n: int) -> list[int]:
    """Up to `n` random ids of rows with a vector, reading only a few pages (TABLESAMPLE SYSTEM)."""
    percent = min(100.0, max(0.01, 100.0 * n * 4 / max(rows, 1)))
    cur.execute(f"SELECT id FROM {c.table} TABLESAMPLE SYSTEM (%s) WHERE v IS NOT NULL ORDER BY random() LIMIT %s",
                (percent, n))
    ids = [int(r[0]) for r in cur.fetchall()]
    if len(ids) < n:  # a small or sparse table: sampling pages may miss; take the rest plainly
        cur.execute(f"SELECT id FROM {c.table} WHERE v IS NOT NULL ORDER BY random() LIMIT %s", (n,))
        ids = [int(r[0]) for r in cur.fetchall()]
    return ids


def neighbours(cur: cursor, dialect: Dialect, c: Coll, image_id: int, ef: int, exact: bool) -> list[int]:
    """The K nearest ids to a stored vector (itself left out), as searches find them (the graph, and the
    unindexed rows beside it) or by a full scan."""
    cur.execute(f"SELECT v::text FROM {c.table} WHERE id = %s", (image_id,))
    vector = str(one_row(cur)[0])  # the column's text form is the dialect's literal form
    if exact:
        cur.execute("SET LOCAL enable_indexscan = off")
    else:
        cur.execute("SET LOCAL enable_seqscan = off")
        for statement in dialect.search_settings(K + 1, ef, filtered=False):
            cur.execute(statement)
    delta = dialect.graph_delta and not exact
    cur.execute(filters.search_sql(dialect, c.table, [] if delta else ["v IS NOT NULL"], K + 1, c.half, "id", delta),
                filters.search_params(vector, [], delta))
    rows = sorted(cur.fetchall(), key=lambda r: r[1])[: K + 1]
    return [int(r[0]) for r in rows if r[0] != image_id][:K]


class Tx(Protocol):
    """Runs `work` in one transaction (index_service.pool.run_tx over the repository's pool)."""

    def __call__(self, work: Callable[[cursor], T], timeout_s: float) -> T: ...


def measure(tx: Tx, dialect: Dialect, c: Coll, ef: int, queries: int, budget_s: float,
            probe: int | None = None) -> Estimate | None:
    """Recall@K of the index at breadth `ef` on up to `queries` sampled vectors, within about `budget_s`;
    with `probe`, the same queries also at that breadth (Estimate.narrower).

    Each query runs in its own short transaction, so searches and health checks never wait behind it.
    """
    started = time.monotonic()
    rows = tx(lambda cur: sizes.estimate_rows(cur, c), 30.0)
    if rows < SMALL:
        return None
    ids = tx(lambda cur: sample_ids(cur, c, rows, queries), 60.0)
    scores: dict[int, list[float]] = {b: [] for b in (ef, probe) if b}
    for image_id in ids:
        if time.monotonic() - started > budget_s:
            break
        truth = set(tx(partial(neighbours, dialect=dialect, c=c, image_id=image_id, ef=ef, exact=True), 120.0))
        if not truth:
            continue
        for breadth, got in scores.items():
            approx = tx(partial(neighbours, dialect=dialect, c=c, image_id=image_id, ef=breadth, exact=False), 60.0)
            got.append(len(set(approx) & truth) / len(truth))
    if not scores[ef]:
        return None
    at, seconds = time.time(), time.monotonic() - started
    est = {b: Estimate(float(np.mean(v)), len(v), b, rows, at, seconds, _stderr(v)) for b, v in scores.items()}
    return replace(est[ef], narrower=est[probe]) if probe else est[ef]


def _stderr(values: list[float]) -> float:
    """Standard error of the mean of per-query recalls, with a floor on the variance (see MIN_VARIANCE)."""
    return math.sqrt(max(float(np.var(values)), MIN_VARIANCE) / len(values))


class Breadth:
    """The search breadth of each collection (thread-safe), and the last recall estimate behind it."""

    def __init__(self, floor: int, fixed: bool) -> None:
        self.floor, self.fixed = floor, fixed
        self._ef: dict[str, int] = {}
        self._rows: dict[str, int] = {}  # the rows the breadth was last guessed for
        self._estimates: dict[str, Estimate] = {}
        self._missed: dict[str, int] = {}  # the widest breadth measured below target: never narrowed back to
        self._lock = threading.Lock()

    def ef(self, collection: str) -> int:
        """The breadth searches of `collection` use now."""
        with self._lock:
            return self._ef.get(collection, self.floor)

    def estimate(self, collection: str) -> Estimate | None:
        """The last recall estimate of `collection`, if any."""
        with self._lock:
            return self._estimates.get(collection)

    def state(self, collection: str) -> tuple[int, int | None, Estimate | None, int]:
        """The breadth of `collection`, the rows it was guessed for, its last estimate and the widest breadth
        that missed the target (what `save` keeps)."""
        with self._lock:
            return (self._ef.get(collection, self.floor), self._rows.get(collection),
                    self._estimates.get(collection), self._missed.get(collection, 0))

    def restore(self, collection: str, ef: int, rows: int | None, estimate: Estimate | None, missed: int = 0) -> None:
        """Take up a kept state (`load`): never below the floor, and not at all with a fixed breadth."""
        if self.fixed:
            return
        with self._lock:
            self._ef[collection] = max(self.floor, min(MAX_EF, ef))
            if rows is not None:
                self._rows[collection] = rows
            if estimate is not None:
                self._estimates[collection] = estimate
            if missed:
                self._missed[collection] = max(missed, self._missed.get(collection, 0))

    def forget(self, collection: str) -> None:
        """Drop all that is known of a collection (dropped: a new one of that name starts afresh)."""
        with self._lock:
            for known in (self._ef, self._rows, self._estimates, self._missed):
                known.pop(collection, None)

    def grow_to(self, collection: str, rows: int) -> int:
        """Follow the collection's growth: the first guess for `rows` when first seen, then, once it grew by
        GROWTH, the breadth scaled as initial_ef scales (never narrower than now). Returns the breadth."""
        with self._lock:
            ef = self._ef.get(collection, self.floor)
            seen = self._rows.get(collection)
            if self.fixed or (seen is not None and rows <= seen * (1 + GROWTH)):
                return ef
            if seen is None:
                ef = max(ef, initial_ef(rows, self.floor))
            elif rows > 50_000:
                ef = max(ef, min(MAX_EF, math.ceil(ef * (rows / max(seen, 50_000)) ** EXPONENT)))
            self._ef[collection], self._rows[collection] = ef, rows
            return ef

    def record(self, collection: str, estimate: Estimate, target: float, narrow: bool = False) -> int:
        """Keep an estimate; below target (and not fixed) widen the breadth; with `narrow`, take the scored
        narrower breadth when its estimate less a standard error holds the target, unless that breadth (or a
        wider one) has missed the target before: noise cannot make it swing back and forth. Returns the breadth."""
        with self._lock:
            self._estimates[collection] = estimate
            ef = self._ef.get(collection, self.floor)
            if self.fixed or (estimate.ef != ef and estimate.recall >= target):
                return ef  # a stale estimate (the breadth moved since) only says something on a miss
            below = estimate.narrower
            if estimate.recall < target:
                self._missed[collection] = max(estimate.ef, self._missed.get(collection, 0))
            if estimate.recall < target and estimate.ef >= ef:
                ef = widened(estimate.ef)
            elif (narrow and estimate.ef == ef and below is not None and below.ef < ef
                  and below.ef > self._missed.get(collection, 0) and below.recall - below.stderr >= target):
                ef = below.ef
            self._ef[collection] = ef
            return ef


class RecallKeeper(Worker):
    """Background thread: per collection, measure recall when due and widen the breadth below target."""

    def __init__(self, breadth: Breadth, dialect: Callable[[], Dialect], tx: Tx,
                 collections: Callable[[], list[Coll]], target: float, queries: int, interval_s: float,
                 budget_s: float, on_widen: Callable[[Coll, int], None] | None = None) -> None:
        super().__init__("index-recall")
        self.breadth, self.dialect, self.tx, self.collections = breadth, dialect, tx, collections
        self.target, self.queries, self.interval_s, self.budget_s = target, queries, interval_s, budget_s
        self.on_widen = on_widen

    def _loop(self) -> None:
        while not self._stop.wait(min(30.0, self.interval_s)):
            try:
                for c in self.collections():
                    if self._stop.is_set():
                        return
                    self.check(c)
            except Exception as err:  # the database may be away: the monitor reports that, try again later
                log.debug("recall check skipped: %s", err)

    def due(self, c: Coll, rows: int) -> bool:
        """Whether `c` needs a fresh estimate: never measured, grown by GROWTH, or older than the interval."""
        last = self.breadth.estimate(c.name)
        if rows < SMALL:
            return False
        if last is None:
            return True
        # A breadth that moved since the last estimate is measured again at once (it may move further).
        return rows > last.rows * (1 + GROWTH) or time.time() - last.at > self.interval_s or (
            last.ef != self.breadth.ef(c.name))

    def check(self, c: Coll) -> Estimate | None:
        """Measure `c` if due; log and widen below target. Returns the new estimate, if one was made."""
        rows = self.tx(lambda cur: sizes.estimate_rows(cur, c), 30.0)
        before = self.breadth.ef(c.name)
        ef = self.breadth.grow_to(c.name, rows)
        if ef != before:
            self._keep(c)
            if self.on_widen is not None:
                self.on_widen(c, ef)
        if not self.due(c, rows):
            return None
        dialect = self.dialect()
        per_query = not dialect.widen(c.index, ef)  # narrowing is free only where no rebuild applies it
        probe = narrowed(ef, self.breadth.floor) if per_query else None
        estimate = measure(self.tx, dialect, c, ef, self.queries, self.budget_s, probe if probe != ef else None)
        if estimate is None:
            return None
        after = self.breadth.record(c.name, estimate, self.target, narrow=per_query)
        if estimate.recall < self.target:
            advice = f"; widening to ef {after}" if after > ef else ""
            if after == ef >= MAX_EF and not self.breadth.fixed:
                advice = ("; the breadth is at its limit: only a rebuild with a larger INDEX_HNSW_EF_CONSTRUCTION "
                          "or INDEX_HNSW_M can reach the target")
            log.warning("collection %s: estimated recall@%d %.3f is below the target %.2f at ef %d (%d rows, %d "
                        "queries)%s", c.name, K, estimate.recall, self.target, ef, rows, estimate.queries, advice)
            if after > ef and self.on_widen is not None:
                self.on_widen(c, after)
        else:
            log.info("collection %s: estimated recall@%d %.3f at ef %d (%d rows, %d queries, %.1f s)%s", c.name, K,
                     estimate.recall, ef, rows, estimate.queries, estimate.seconds,
                     f"; narrowing to ef {after}" if after < ef else "")
        self._keep(c)
        return estimate

    def _keep(self, c: Coll) -> None:
        """Store the collection's breadth and last estimate (search_breadths), for a restart or another replica."""
        state = self.breadth.state(c.name)
        self.tx(lambda cur: save(cur, c.name, *state), 30.0)


def save(cur: cursor, collection: str, ef: int, rows: int | None, e: Estimate | None, missed: int = 0) -> None:
    """Keep a collection's breadth, last estimate and widest missed breadth in search_breadths (migrations
    15 and 16)."""
    fields = (e.recall, e.stderr, e.queries, e.ef, e.rows, e.at, e.seconds) if e else (None,) * 7
    cur.execute("INSERT INTO search_breadths VALUES (%s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), %s, %s) "
                "ON CONFLICT (collection) DO UPDATE SET ef = excluded.ef, rows = excluded.rows, "
                "recall = excluded.recall, stderr = excluded.stderr, queries = excluded.queries, "
                "measured_ef = excluded.measured_ef, measured_rows = excluded.measured_rows, "
                "measured_at = excluded.measured_at, measured_seconds = excluded.measured_seconds, "
                "missed_ef = excluded.missed_ef",
                (collection, ef, rows, *fields, missed))


def load(cur: cursor) -> list[tuple[str, int, int | None, Estimate | None, int]]:
    """Every kept breadth (for Breadth.restore)."""
    cur.execute("SELECT collection, ef, rows, recall, stderr, queries, measured_ef, measured_rows, "
                "extract(epoch FROM measured_at), measured_seconds, missed_ef FROM search_breadths "
                "ORDER BY collection")
    out = []
    for name, ef, rows, recall, stderr, queries, m_ef, m_rows, at, seconds, missed in cur.fetchall():
        e = None if recall is None else Estimate(recall, queries, m_ef, m_rows, float(at), seconds, stderr)
        out.append((name, ef, rows, e, missed))
    return out


def collections_with_index(cur: cursor) -> list[Coll]:
    """Every collection whose HNSW index is ready (an unindexed one is searched exactly anyway)."""
    out = []
    for name in catalog.names(cur):
        c = catalog.resolve(cur, name)
        cur.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", (c.index,))
        row = cur.fetchone()
        if row is not None and row[0]:
            out.append(c)
    return out
