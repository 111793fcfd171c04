"""Concurrency, selective filters, recall, bulk load and the media sweep against a real Postgres."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psycopg2

from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, clustered, item, make_config, start_server, unit


def test_four_concurrent_upserters_of_overlapping_batches(index: Running) -> None:
    rng = np.random.default_rng(20)
    pool = [item(unit(rng), f"c{i}") for i in range(120)]
    # Each writer sends batches that overlap the others', in a different order.
    plans = [[pool[(w * 17 + j) % 120: (w * 17 + j) % 120 + 30] for j in range(0, 120, 15)] for w in range(4)]
    for w, plan in enumerate(plans):
        if w % 2:
            plan.reverse()

    def writer(plan: list[list[index_pb2.UpsertItem]]) -> list[index_pb2.UpsertResult]:
        return [r for batch in plan for r in index.stub.Upsert(index_pb2.UpsertRequest(items=batch),
                                                               timeout=60).results]

    with ThreadPoolExecutor(4) as ex:
        results = [r for rs in ex.map(writer, plans) for r in rs]
    assert all(not r.HasField("error") for r in results)
    by_sha: dict[str, set[int]] = {}
    for r in results:
        by_sha.setdefault(r.sha256, set()).add(r.id)
    assert all(len(ids) == 1 for ids in by_sha.values())  # every writer saw the same row
    created = [r.sha256 for r in results if r.created]
    assert len(created) == len(set(created)) == len(by_sha)  # exactly one writer created each
    with psycopg2.connect(index.config.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT sha256) FROM images")
        assert cur.fetchone() == (len(by_sha), len(by_sha))


def test_selective_filters_return_k_rows(tmp_path: Path, pg_dsn: str) -> None:
    rng = np.random.default_rng(21)
    vecs = clustered(rng, 3000, 60)
    labels = ["rare" if i % 250 == 0 else "common" for i in range(3000)]  # 12 rare rows
    running = start_server(make_config(tmp_path, pg_dsn, defer_index=True))
    try:
        for start in range(0, 3000, 500):
            batch = [item(vecs[i], f"f{i}", label=labels[i], source=f"s{i % 7}")
                     for i in range(start, start + 500)]
            running.stub.Upsert(index_pb2.UpsertRequest(items=batch), timeout=60)
        running.stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=120)
        for q in range(5):
            req = index_pb2.SearchRequest(vector=vecs[q * 7 + 1].tolist(), k=10,
                                          filter=index_pb2.Filter(labels=["rare"]))
            hits = running.stub.Search(req, timeout=10).hits
            assert len(hits) == 10 and {h.label for h in hits} == {"rare"}
        req = index_pb2.SearchRequest(vector=vecs[3].tolist(), k=12, filter=index_pb2.Filter(labels=["rare"]))
        assert len(running.stub.Search(req, timeout=10).hits) == 12
        req = index_pb2.SearchRequest(vector=vecs[3].tolist(), k=50, filter=index_pb2.Filter(labels=["rare"]))
        assert len(running.stub.Search(req, timeout=10).hits) == 12  # all that match
        req = index_pb2.SearchRequest(vector=vecs[3].tolist(), k=100,
                                      filter=index_pb2.Filter(labels=["common"], source="s3"))
        hits = running.stub.Search(req, timeout=10).hits
        assert len(hits) == 100 and {h.source for h in hits} == {"s3"}
    finally:
        running.stop()


def test_recall_at_10_against_exact(tmp_path: Path, pg_dsn: str) -> None:
    rng = np.random.default_rng(22)
    n, dim = 8000, 512
    vecs = clustered(rng, n, 300, dim)
    running = start_server(make_config(tmp_path, pg_dsn, defer_index=True))
    try:
        ids: list[int] = []
        for start in range(0, n, 1000):
            batch = [item(vecs[i], f"r{i}", thumb=b"") for i in range(start, start + 1000)]
            ids += [r.id for r in running.stub.Upsert(index_pb2.UpsertRequest(items=batch), timeout=120).results]
        stats = running.stub.Stats(index_pb2.StatsRequest(), timeout=5)
        assert stats.index_state == index_pb2.INDEX_STATE_MISSING
        running.stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=300)
        assert running.stub.Stats(index_pb2.StatsRequest(), timeout=5).index_state == index_pb2.INDEX_STATE_READY
        id_of = np.array(ids)
        found = 0
        queries = 100
        for _ in range(queries):
            base = vecs[rng.integers(0, n)]
            v = base + rng.standard_normal(dim).astype(np.float32) * (0.2 / np.sqrt(dim))
            v /= np.linalg.norm(v)
            truth = set(id_of[np.argsort(-(vecs @ v))[:10]].tolist())
            hits = running.stub.Search(index_pb2.SearchRequest(vector=v.tolist(), k=10), timeout=10).hits
            exact = running.stub.Search(index_pb2.SearchRequest(vector=v.tolist(), k=10, exact=True), timeout=10)
            assert {h.id for h in exact.hits} == truth
            found += len(truth & {h.id for h in hits})
        assert found / (queries * 10) >= 0.99
    finally:
        running.stop()


def test_orphan_sweep_keeps_files_with_rows(index: Running) -> None:
    rng = np.random.default_rng(23)
    kept = item(unit(rng), "kept")
    index.stub.Upsert(index_pb2.UpsertRequest(items=[kept]), timeout=10)
    media = index.deps.media
    orphan = "ab" * 32
    media.put(orphan, b"left by a crash")
    stale_tmp = media.root / "ab" / "ab" / ".tmp-123"
    stale_tmp.write_bytes(b"half")
    old = time.time() - 7200
    for path in (media.path_for(orphan), media.path_for(kept.sha256), stale_tmp):
        os.utime(path, (old, old))
    removed = media.sweep(index.deps.repo.with_orphans, grace_s=3600)
    assert removed == 2
    assert not media.exists(orphan) and not stale_tmp.exists() and media.exists(kept.sha256)
