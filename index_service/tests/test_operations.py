"""Operations at size against a real Postgres: cheap Stats, bounded exact search, the sweep off the health
thread, bulk loads that build the index afterwards, build memory and its spill notice."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import psycopg2
import pytest
from prometheus_client import REGISTRY

from index_service import sizes, tag_counts
from index_service.catalog import Coll
from index_service.server import Deps
from index_service.server import serve as serve_index
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common import status
from tests.support.health import SERVING
from tests.support.index import Running, clustered, item, make_config, start_server, unit


def _load(running: Running, n: int, seed: int, expected_rows: int = 0, batch: int = 200) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = [unit(rng) for _ in range(n)]
    for start in range(0, n, batch):
        items = [item(v, f"s{seed}-{start + i}") for i, v in enumerate(vecs[start:start + batch])]
        running.stub.Upsert(index_pb2.UpsertRequest(items=items, expected_rows=expected_rows), timeout=60)
    return vecs


def _analyze(running: Running) -> None:
    with psycopg2.connect(running.config.dsn) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE images")  # statistics now, not when autovacuum comes round


def _until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _stats(running: Running) -> index_pb2.StatsResponse:
    return running.stub.Stats(index_pb2.StatsRequest(), timeout=5)


def test_stats_is_exact_when_small_and_estimated_when_large(tmp_path: Path, pg_dsn: str) -> None:
    running = start_server(make_config(tmp_path, pg_dsn, stats_exact_max=50))
    try:
        _load(running, 40, seed=1)
        small = _stats(running)
        exact_bytes = sum(len(f"original-s1-{i}") for i in range(40))
        assert (small.count, small.estimated, small.media_bytes) == (40, False, exact_bytes)
        _load(running, 160, seed=2)
        _analyze(running)
        large = _stats(running)
        assert large.estimated and 180 <= large.count <= 220, large.count
        # Every original here is 13-15 bytes: the sampled mean scales to about the true total.
        assert 0.8 * 200 * 14 <= large.media_bytes <= 1.2 * 200 * 14, large.media_bytes
        assert list(large.model_ids) == ["clip@1"]
    finally:
        running.stop()


def test_a_load_analyzed_before_its_counts_arrived_is_not_counted_twice(pg_dsn: str) -> None:
    """ANALYZE sets the live-row counter; the loading connection's late flush then adds its rows again."""
    with psycopg2.connect(pg_dsn) as loader, psycopg2.connect(pg_dsn) as other:
        other.autocommit = True
        with loader.cursor() as lc, other.cursor() as oc:
            def run(sql: str) -> None:
                lc.execute(sql)
                loader.commit()

            def flushed() -> int:
                """The live-row counter once the loader's transactions flushed their counts (at most once a
                second, at a transaction's end), read past this connection's cached statistics."""
                for _ in range(8):
                    run("SELECT 1")
                    time.sleep(0.4)
                oc.execute("SELECT pg_stat_clear_snapshot(); "
                           "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'loaded'")
                return int(oc.fetchone()[0])

            coll = Coll("loaded", "loaded", 2, None, "float32")
            run("CREATE TABLE loaded (id int, pad text)")
            run("INSERT INTO loaded SELECT g, repeat('x', 2000) FROM generate_series(1, 1200) g")
            oc.execute("ANALYZE loaded")  # within the second before the loader flushes its counts
            assert flushed() == 2400, "the double count this guards against did not happen"
            assert sizes.estimate_rows(oc, coll) == 1200
            oc.execute("ANALYZE loaded")
            run("INSERT INTO loaded SELECT g, repeat('x', 2000) FROM generate_series(1, 300) g")
            assert flushed() == 1500 and sizes.estimate_rows(oc, coll) == 1500  # the counter, while believable
            run("DELETE FROM loaded WHERE id <= 100")
            assert flushed() == 1300 and sizes.estimate_rows(oc, coll) == 1300  # it follows deletes too


def test_exact_search_is_refused_above_the_limit(tmp_path: Path, pg_dsn: str) -> None:
    running = start_server(make_config(tmp_path, pg_dsn, exact_max_rows=100))
    try:
        vecs = _load(running, 60, seed=3)
        _analyze(running)
        exact = index_pb2.SearchRequest(vector=vecs[5].tolist(), k=3, exact=True)
        assert running.stub.Search(exact, timeout=10).hits[0].score == pytest.approx(1.0, abs=1e-5)
        _load(running, 100, seed=4)
        _analyze(running)
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.Search(exact, timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert status.call_reason(caught.value) == "EXACT_SEARCH_TOO_LARGE"
        assert "INDEX_EXACT_MAX_ROWS" in (caught.value.details() or "")
        approximate = index_pb2.SearchRequest(vector=vecs[5].tolist(), k=3)
        assert running.stub.Search(approximate, timeout=10).hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert _stats(running).max_exact_rows == 100
    finally:
        running.stop()


def _plans(name: str) -> float:
    return REGISTRY.get_sample_value("index_search_plans_total", {"plan": name}) or 0.0


def test_a_selective_filter_is_scanned_exactly_and_bounds_exact_search_by_its_rows(
        tmp_path: Path, pg_dsn: str) -> None:
    rng = np.random.default_rng(8)
    vecs = clustered(rng, 600, 6)
    labels = ["rare" if i % 50 == 0 else "common" for i in range(600)]  # 12 rare rows, 588 common
    running = start_server(make_config(tmp_path, pg_dsn, exact_filter_rows=50, exact_max_rows=100))
    try:
        items = [item(v, f"sel-{i}", label=labels[i]) for i, v in enumerate(vecs)]
        ids = [r.id for r in running.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=60).results]
        _analyze(running)
        rare = np.array([lab == "rare" for lab in labels])
        for qi in (1, 2, 3):  # each query's exact top 5 among the rare rows, whichever cluster they lie in
            q = vecs[qi]
            before = _plans("selective_filter")
            req = index_pb2.SearchRequest(vector=q.tolist(), k=5, filter=index_pb2.Filter(labels=["rare"]))
            found = [h.id for h in running.stub.Search(req, timeout=10).hits]
            want = [ids[i] for i in np.argsort(-np.where(rare, vecs @ q, -np.inf))[:5]]
            # At least once: the counter is the process's, and once in the full suite it moved by two here.
            assert found == want and _plans("selective_filter") >= before + 1
        before = _plans("index")
        common = index_pb2.SearchRequest(vector=vecs[1].tolist(), k=5, filter=index_pb2.Filter(labels=["common"]))
        assert len(running.stub.Search(common, timeout=10).hits) == 5 and _plans("index") >= before + 1
        # exact=true is bounded by the rows its filter keeps: 12 pass, 588 are refused (the collection's
        # 600 rows alone would refuse both).
        rare_exact = index_pb2.SearchRequest(vector=vecs[1].tolist(), k=5, exact=True,
                                             filter=index_pb2.Filter(labels=["rare"]))
        assert len(running.stub.Search(rare_exact, timeout=10).hits) == 5
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.Search(index_pb2.SearchRequest(vector=vecs[1].tolist(), k=5, exact=True,
                                                        filter=index_pb2.Filter(labels=["common"])), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "has a filter that keeps about" in (caught.value.details() or "")
    finally:
        running.stop()
    # INDEX_EXACT_FILTER_ROWS=0, or a share below the filter's 2 %: the filter walks the graph (the exact
    # scan only when the graph runs out). The share is a quarter of it, a margin for a row estimate that
    # errs high (a live-row count Postgres doubled is refused by sizes.estimate_rows; see the test above).
    for settings in ({"exact_filter_rows": 0}, {"exact_filter_rows": 1000, "exact_filter_share": 0.005}):
        running = start_server(make_config(tmp_path, pg_dsn, **settings))
        try:
            before = _plans("selective_filter")
            req = index_pb2.SearchRequest(vector=vecs[1].tolist(), k=5, filter=index_pb2.Filter(labels=["rare"]))
            assert len(running.stub.Search(req, timeout=10).hits) == 5 and _plans("selective_filter") == before
        finally:
            running.stop()


def test_serving_comes_at_once_and_health_answers_while_the_sweep_runs(
        tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(tmp_path, pg_dsn, orphan_grace_s=0.0, sweep_batch=10)
    media = config.media_dir
    orphans = []
    for i in range(30):  # crash leftovers: files without rows, old enough to go
        sha = hashlib.sha256(f"orphan-{i}".encode()).hexdigest()
        path = media / sha[:2] / sha[2:4] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 7200, time.time() - 7200))
        orphans.append(path)
    deps = Deps.build(config, pg_dsn)
    sweeping, release = threading.Event(), threading.Event()
    real = deps.repo.with_orphans

    steps: list[int] = []

    def held(shas: list[str], remove: Callable[[list[str]], None]) -> None:
        steps.append(len(shas))
        sweeping.set()
        release.wait(30)  # a sweep as slow as one over millions of files
        real(shas, remove)

    monkeypatch.setattr(deps.repo, "with_orphans", held)
    folds: list[float] = []

    def broken_fold(pool: object) -> None:  # a fold failing at every turn must not restart the sweep's pass
        folds.append(time.monotonic())
        raise RuntimeError("fold failed")

    monkeypatch.setattr(tag_counts, "FOLD_INTERVAL_S", 0.0)
    monkeypatch.setattr(tag_counts, "fold_grown", broken_fold)
    started = time.monotonic()
    server = serve_index(config, deps)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    running = Running(config, deps, server, channel, index_pb2_grpc.IndexStub(channel))
    try:
        running.wait_serving(timeout_s=10)
        assert time.monotonic() - started < 3.0, "SERVING waited for something"
        assert sweeping.wait(10), "the sweep is due at start-up"
        for _ in range(5):  # the health thread is not the one sweeping
            assert running.health() == SERVING
            time.sleep(config.health_interval_s)
        assert all(p.exists() for p in orphans)
        release.set()
        background = deps.background
        assert background is not None
        _until(lambda: background.sweeps_done == 1)
        assert not any(p.exists() for p in orphans)
        assert len(steps) == 3, "30 files in steps of at most 10 (INDEX_SWEEP_BATCH)"
        assert len(folds) >= 3
    finally:
        release.set()
        running.stop()


def test_a_bulk_load_into_an_empty_collection_builds_the_index_after_it(tmp_path: Path, pg_dsn: str) -> None:
    running = start_server(make_config(tmp_path, pg_dsn, bulk_min_rows=300, bulk_idle_s=1.0))
    try:
        assert _stats(running).index_state == index_pb2.INDEX_STATE_READY
        vecs = _load(running, 400, seed=5, expected_rows=400)
        assert _stats(running).index_state == index_pb2.INDEX_STATE_MISSING  # deferred for the load
        _until(lambda: _stats(running).index_state == index_pb2.INDEX_STATE_READY)
        hits = running.stub.Search(index_pb2.SearchRequest(vector=vecs[7].tolist(), k=1), timeout=10).hits
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        # A collection that holds rows keeps its index whatever load is announced.
        _load(running, 50, seed=6, expected_rows=100_000)
        assert _stats(running).index_state == index_pb2.INDEX_STATE_READY
        # A small load into an empty collection keeps it too.
        running.stub.CreateCollection(index_pb2.CreateCollectionRequest(name="small", model_id="clip@1", dim=512),
                                      timeout=10)
        running.stub.Upsert(index_pb2.UpsertRequest(items=[item(vecs[0], "x")], collection="small",
                                                    expected_rows=10), timeout=10)
        stats = running.stub.Stats(index_pb2.StatsRequest(collection="small"), timeout=5)
        assert stats.index_state == index_pb2.INDEX_STATE_READY
    finally:
        running.stop()


def test_build_index_at_the_end_of_a_load_builds_at_once(tmp_path: Path, pg_dsn: str) -> None:
    running = start_server(make_config(tmp_path, pg_dsn, bulk_min_rows=100, bulk_idle_s=3600))
    try:
        _load(running, 200, seed=7, expected_rows=200)
        assert _stats(running).index_state == index_pb2.INDEX_STATE_MISSING
        reply = running.stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=60)
        assert reply.built and reply.index_state == index_pb2.INDEX_STATE_READY
        assert running.deps.repo.bulk.waiting() == []
    finally:
        running.stop()


def test_a_graph_that_outgrows_build_memory_is_logged(tmp_path: Path, pg_dsn: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    running = start_server(make_config(tmp_path, pg_dsn, defer_index=True, maintenance_work_mem="1MB"))
    try:
        _load(running, 600, seed=8)
        with caplog.at_level(logging.WARNING, logger="index_service.builds"):
            running.stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=120)
        assert any("no longer fits into maintenance_work_mem" in r.getMessage() and "1MB" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
    finally:
        running.stop()


def test_build_memory_follows_the_collection(tmp_path: Path, pg_dsn: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    running = start_server(make_config(tmp_path, pg_dsn, defer_index=True))
    try:
        _load(running, 300, seed=9)
        with caplog.at_level(logging.INFO, logger="index_service.repository"):
            running.stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=120)
        built = [r.getMessage() for r in caplog.records if "built images_v_hnsw" in r.getMessage()]
        assert built and "maintenance_work_mem 64MB" in built[0], built  # a small collection: the floor
        assert not any("no longer fits" in r.getMessage() for r in caplog.records)
    finally:
        running.stop()
