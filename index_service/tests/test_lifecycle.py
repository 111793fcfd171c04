"""Prototype-table adoption, Postgres restarting under the service, health, and the launcher."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import psutil
import psycopg2
import pytest
from grpc_health.v1 import health_pb2

from index_service.migrations import MIGRATIONS
from index_service.pg import EmbeddedPostgres
from protos.semsearch.v1 import index_pb2
from tests.support.health import wait_status
from tests.support.index import Running, item, make_config, start_server, unit
from tests.support.pg import FAST_SETTINGS, create_database


def test_prototype_table_is_adopted_in_place(tmp_path: Path, pg_dsn: str) -> None:
    rng = np.random.default_rng(30)
    vecs = [unit(rng) for _ in range(30)]
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE image_table (v REAL[], location VARCHAR, id SERIAL PRIMARY KEY)")
        for i, v in enumerate(vecs):
            cur.execute("INSERT INTO image_table (v, location) VALUES (%s, %s)",
                        (v.tolist(), f"/home/proto/caltech/{i:03d}.jpg"))
    running = start_server(make_config(tmp_path, pg_dsn))
    try:
        stats = running.stub.Stats(index_pb2.StatsRequest(), timeout=5)
        assert (stats.count, stats.dim, list(stats.model_ids), stats.index_state) == (
            30, 512, ["unknown"], index_pb2.INDEX_STATE_READY)
        hits = running.stub.Search(index_pb2.SearchRequest(vector=vecs[12].tolist(), k=3), timeout=5).hits
        assert hits[0].id == 13 and hits[0].score == pytest.approx(1.0, abs=1e-5)
        (meta,) = running.stub.Get(index_pb2.GetRequest(ids=[13]), timeout=5).images
        assert (meta.model_id, meta.file_name, meta.sha256) == ("unknown", "012.jpg", "")
        with pytest.raises(grpc.RpcError) as info:
            list(running.stub.GetImage(index_pb2.GetImageRequest(id=13), timeout=5))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "/home/proto/caltech/012.jpg" in info.value.details()
        new = running.stub.Upsert(index_pb2.UpsertRequest(items=[item(unit(rng), "new")]), timeout=10).results[0]
        assert new.created and new.id == 31  # the prototype's sequence carries on
        stats = running.stub.Stats(index_pb2.StatsRequest(), timeout=5)
        assert sorted(stats.model_ids) == ["clip@1", "unknown"]
    finally:
        running.stop()
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM index_migrations ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == sorted(version for version, _, _ in MIGRATIONS)
        cur.execute("SELECT to_regclass('image_table') IS NULL")
        assert cur.fetchone()[0]


def test_two_services_starting_together_migrate_once(tmp_path: Path, pg_dsn: str) -> None:
    with ThreadPoolExecutor(2) as ex:
        servers = list(ex.map(lambda i: start_server(make_config(tmp_path / str(i), pg_dsn)), range(2)))
    for s in servers:
        s.stop()
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM index_migrations")
        assert cur.fetchone()[0] == len(MIGRATIONS)


@pytest.mark.db  # a Postgres of its own
def test_postgres_restart_during_a_batch(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", settings=FAST_SETTINGS)
    pg.start()
    dsn = create_database(pg)
    running = start_server(make_config(tmp_path / "data", dsn))
    try:
        rng = np.random.default_rng(31)
        running.stub.Upsert(index_pb2.UpsertRequest(items=[item(unit(rng), "before")]), timeout=10)
        batch = [item(unit(rng), f"during{i}") for i in range(50)]
        # Hold a lock the batch's INSERT waits for, so Postgres dies while the batch is mid-transaction.
        blocker = psycopg2.connect(dsn)
        blocker.cursor().execute("LOCK TABLE images IN SHARE MODE")
        outcome: dict[str, object] = {}

        def send() -> None:
            try:
                running.stub.Upsert(index_pb2.UpsertRequest(items=batch), timeout=60)
                outcome["code"] = grpc.StatusCode.OK
            except grpc.RpcError as err:
                outcome["code"] = err.code()

        sender = threading.Thread(target=send)
        sender.start()
        _wait_for_lock_waiter(dsn)
        pg.stop(mode="immediate")
        sender.join(timeout=60)
        assert outcome["code"] == grpc.StatusCode.UNAVAILABLE
        q = index_pb2.SearchRequest(vector=unit(rng).tolist(), k=3)
        with pytest.raises(grpc.RpcError) as info:
            running.stub.Search(q, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        _wait_health(running, health_pb2.HealthCheckResponse.NOT_SERVING)
        pg.start()  # same port: the service's DSN stays valid
        _wait_health(running, health_pb2.HealthCheckResponse.SERVING)
        assert len(running.stub.Search(q, timeout=5).hits) == 1
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT file_name FROM images")
            assert [r[0] for r in cur.fetchall()] == ["before.jpg"]  # nothing of the batch
        # The retried batch goes in whole, and every file the dead batch wrote now has its row.
        res = running.stub.Upsert(index_pb2.UpsertRequest(items=batch), timeout=30).results
        assert all(r.created for r in res)
        assert running.deps.media.sweep(running.deps.repo.with_orphans, grace_s=0) == 0
    finally:
        running.stop()
        pg.stop(mode="immediate")


def _wait_for_lock_waiter(dsn: str) -> None:
    deadline = time.monotonic() + 30  # a loaded CI machine may take seconds to reach the batch's first write
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        conn.autocommit = True
        while time.monotonic() < deadline:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            if cur.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the batch never waited on the lock")


def _wait_health(running: Running, status: int, timeout_s: float = 20) -> None:
    wait_status(running.channel, status, timeout_s=timeout_s)


@pytest.mark.db  # a Postgres of its own
def test_launcher_stale_pid_and_concurrent_starters(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", settings=FAST_SETTINGS)
    with ThreadPoolExecutor(3) as ex:
        dsns = list(ex.map(lambda _: EmbeddedPostgres(tmp_path / "pg", settings=FAST_SETTINGS).start(), range(3)))
    assert len(set(dsns)) == 1
    pg.start()
    assert pg.is_running() and pg.dsn() == dsns[0] and "127.0.0.1" in pg.dsn()
    pid = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    os.kill(pid, signal.SIGKILL)
    postmaster.wait(10)
    assert not pg.is_running()
    assert (pg.pgdata / "postmaster.pid").exists()  # stale
    dsn = pg.start()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    pg.stop()
    assert not pg.is_running()
