"""Rows upserted into an indexed collection wait beside the graph (index_service.merger), on a real Postgres:
found at once by every kind of search, bounded in number, handed to the graph once upserts pause."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psycopg2

from index_service.pool import run_tx
from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, clustered, item, make_config, start_server

LIMIT = 100  # INDEX_UNINDEXED_MAX_ROWS here


def _upsert(running: Running, vecs: np.ndarray, prefix: str, label: str = "cat") -> list[int]:
    ids = []
    for start in range(0, len(vecs), 150):
        items = [item(v, f"{prefix}-{start + i}", label=label) for i, v in enumerate(vecs[start:start + 150])]
        reply = running.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=60)
        ids += [r.id for r in reply.results]
    return ids


def _sql(running: Running, sql: str) -> list[tuple[object, ...]]:
    with psycopg2.connect(running.config.dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []


def _vacuum(running: Running) -> None:
    conn = psycopg2.connect(running.config.dsn)
    conn.autocommit = True  # VACUUM runs outside a transaction; it counts the graph's rows (reltuples)
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE images")
    conn.close()


def _unindexed(running: Running) -> int:
    return running.stub.Stats(index_pb2.StatsRequest(), timeout=5).unindexed_rows


def _top(running: Running, v: np.ndarray, **kw: object) -> index_pb2.SearchResponse:
    return running.stub.Search(index_pb2.SearchRequest(vector=v.tolist(), k=5, **kw), timeout=10)  # type: ignore[arg-type]


def _graph(tmp_path: Path, pg_dsn: str, **overrides: object) -> tuple[Running, np.ndarray, np.ndarray]:
    """A service whose collection holds 300 rows in its graph (counted by VACUUM): the service, those rows'
    vectors and 120 more."""
    running = start_server(make_config(tmp_path, pg_dsn, unindexed_max_rows=LIMIT, **overrides))
    vecs = clustered(np.random.default_rng(17), 420, 12)
    _upsert(running, vecs[:300], "g")
    assert _unindexed(running) == 0  # an uncounted graph takes rows itself
    _vacuum(running)
    return running, vecs[:300], vecs[300:]


def test_waiting_rows_are_found_at_once_bounded_and_handed_to_the_graph(tmp_path: Path, pg_dsn: str) -> None:
    running, _, fresh = _graph(tmp_path, pg_dsn, merge_idle_s=3600.0)  # the background waits: merged by hand
    try:
        ids = _upsert(running, fresh[:60], "w", label="dog")
        assert _unindexed(running) == 60
        assert _sql(running, "SELECT count(*) FROM images WHERE unindexed") == [(60,)]
        for i in (0, 31, 59):  # each waiting row is its own nearest, by every kind of search
            assert _top(running, fresh[i]).hits[0].id == ids[i]
            assert _top(running, fresh[i], exact=True).hits[0].id == ids[i]
            assert _top(running, fresh[i], filter=index_pb2.Filter(labels=["dog"])).hits[0].id == ids[i]
            similar = running.stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=ids[i], k=4), timeout=10)
            assert [h.id for h in similar.hits] == [h.id for h in _top(running, fresh[i], exact=True).hits[1:]]
        _upsert(running, fresh[60:], "x")  # 60 more would make 120 wait: these go into the graph
        assert _unindexed(running) == 60

        repo = running.deps.repo
        merged = [repo.merge_unindexed(batch=25, idle_s=0.0) for _ in range(4)]
        assert merged == [25, 25, 10, 0] and _unindexed(running) == 0
        for i in (0, 31, 59):
            assert _top(running, fresh[i]).hits[0].id == ids[i]  # now through the graph
    finally:
        running.stop()


def test_the_search_walks_the_graph_and_scans_the_waiting_rows_through_their_index(
        tmp_path: Path, pg_dsn: str) -> None:
    from index_service import filters
    from index_service.domain import SearchQuery

    running, _, fresh = _graph(tmp_path, pg_dsn, merge_idle_s=3600.0)
    try:
        _upsert(running, fresh[:20], "w")
        repo = running.deps.repo
        c = repo.collection("", 10)
        p = filters.plan(repo.dialect, c.table, SearchQuery(vector=fresh[0], k=10), 100, 10)

        def explain(cur: psycopg2.extensions.cursor) -> str:
            for statement in p.settings:
                cur.execute(statement)
            cur.execute("EXPLAIN " + p.sql, p.params)
            return "\n".join(r[0] for r in cur.fetchall())

        text = run_tx(repo.pool, explain, 10)
        assert f"Index Scan using {c.index}" in text and f"{c.table}_unindexed" in text, text
        assert "Seq Scan" not in text
    finally:
        running.stop()


def test_the_background_hands_waiting_rows_to_the_graph_once_upserts_pause(tmp_path: Path, pg_dsn: str) -> None:
    running, _, fresh = _graph(tmp_path, pg_dsn, merge_idle_s=0.2, merge_batch=16)
    try:
        ids = _upsert(running, fresh[:50], "w")
        deadline = time.monotonic() + 30
        while _unindexed(running):
            assert time.monotonic() < deadline, "the waiting rows were not merged"
            time.sleep(0.1)
        assert [_top(running, v).hits[0].id for v in fresh[:50]] == ids
    finally:
        running.stop()


def test_a_graph_that_holds_every_row_takes_new_rows_itself(tmp_path: Path, pg_dsn: str) -> None:
    """An index from before migration 17 has no predicate: rows cannot wait beside it."""
    running, _, fresh = _graph(tmp_path, pg_dsn, merge_idle_s=3600.0)
    try:
        c = running.deps.repo.collection("", 10)
        _sql(running, f"DROP INDEX {c.index}; CREATE INDEX {c.index} ON {c.table} USING hnsw (v vector_cosine_ops)")
        _vacuum(running)
        ids = _upsert(running, fresh[:10], "w")
        assert _unindexed(running) == 0 and _top(running, fresh[3]).hits[0].id == ids[3]
    finally:
        running.stop()


def test_near_copies_waiting_beside_the_graph_are_grouped_with_their_original(tmp_path: Path, pg_dsn: str) -> None:
    running, stored_rows, _ = _graph(tmp_path, pg_dsn, merge_idle_s=3600.0)
    try:
        stored = stored_rows[5]
        original = _top(running, stored).hits[0].id
        copy = stored + np.float32(1e-4)
        copies = _upsert(running, np.stack([copy / np.linalg.norm(copy)]), "copy")
        assert _unindexed(running) == 1
        page = running.stub.FindDuplicates(index_pb2.FindDuplicatesRequest(max_distance=0.01, limit=1000), timeout=60)
        groups = [sorted(m.image.id for m in g.members) for g in page.groups]
        assert sorted([original, *copies]) in groups
    finally:
        running.stop()
