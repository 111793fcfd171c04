"""Searches on a real streaming replica (pg_basebackup -R from the embedded server's own tools): lag, loss
and return of the replica."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from index_service.pg import EmbeddedPostgres
from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, item, make_config, start_server, unit
from tests.support.pg import FAST_SETTINGS


@pytest.fixture
def replica(embedded_pg: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """A hot standby of the session's server on another loopback port (its test databases come along)."""
    root = Path(tempfile.mkdtemp(prefix="replica-pg-"))
    standby = EmbeddedPostgres(root, settings=FAST_SETTINGS)  # a standby needs the primary's limits or more
    try:
        standby.replicate("127.0.0.1", embedded_pg.port)
        standby.start()
        yield standby
    finally:
        standby.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def _until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _replay(standby: EmbeddedPostgres, on: bool) -> None:
    conn = psycopg2.connect(standby.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_wal_replay_resume()" if on else "SELECT pg_wal_replay_pause()")
    conn.close()


def _top(running: Running, vec: np.ndarray) -> int:
    return running.stub.Search(index_pb2.SearchRequest(vector=vec.tolist(), k=1), timeout=10).hits[0].id


def _add(running: Running, vec: np.ndarray, key: str) -> int:
    return running.stub.Upsert(index_pb2.UpsertRequest(items=[item(vec, key)]), timeout=10).results[0].id


def _on_replica(running: Running) -> bool:
    return running.stub.Stats(index_pb2.StatsRequest(), timeout=5).reads_from_replica


def test_searches_follow_the_replica_through_lag_loss_and_return(
        tmp_path: Path, pg_dsn: str, replica: EmbeddedPostgres) -> None:
    dsn = pg_dsn
    read_dsn = replica.dsn(dsn.rsplit("dbname=", 1)[1])
    rng = np.random.default_rng(60)
    vecs = [unit(rng) for _ in range(4)]
    running = start_server(make_config(tmp_path, dsn, read_dsn=read_dsn, read_retry_s=0.5))
    try:
        first = _add(running, vecs[0], "a")
        _until(lambda: _top(running, vecs[0]) == first)  # replayed on the replica
        assert _on_replica(running)

        # Lag: while the replica stands still, a new image is not found yet; it is once replay goes on.
        _replay(replica, on=False)
        second = _add(running, vecs[1], "b")
        assert _top(running, vecs[1]) != second, "searches run on the replica, which has not replayed it"
        hits = running.stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=second, k=1), timeout=10).hits
        assert hits and hits[0].id == first, "an id the replica lacks is looked up on the primary"
        _replay(replica, on=True)
        _until(lambda: _top(running, vecs[1]) == second)

        # Loss: the primary answers in its place.
        replica.stop(mode="fast")
        third = _add(running, vecs[2], "c")
        assert _top(running, vecs[2]) == third
        assert not _on_replica(running)

        # Return: the replica takes the searches back (proved by its lag once more).
        replica.start()
        _until(lambda: _top(running, vecs[2]) == third and _on_replica(running))
        _replay(replica, on=False)
        fourth = _add(running, vecs[3], "d")
        assert _top(running, vecs[3]) != fourth
        _replay(replica, on=True)
        _until(lambda: _top(running, vecs[3]) == fourth)
    finally:
        running.stop()


def test_a_replica_further_behind_than_the_limit_leaves_searches_to_the_primary(
        tmp_path: Path, pg_dsn: str, replica: EmbeddedPostgres) -> None:
    read_dsn = replica.dsn(pg_dsn.rsplit("dbname=", 1)[1])
    rng = np.random.default_rng(61)
    vecs = [unit(rng) for _ in range(2)]
    running = start_server(make_config(tmp_path, pg_dsn, read_dsn=read_dsn, read_max_lag_s=0.5))
    try:
        first = _add(running, vecs[0], "a")
        _until(lambda: _top(running, vecs[0]) == first)  # caught up: the replica answers
        _replay(replica, on=False)
        second = _add(running, vecs[1], "b")
        time.sleep(1.0)  # the replica holds WAL it has not replayed, older than the limit
        assert _top(running, vecs[1]) == second, "a lagging replica hands the search to the primary"
        assert _on_replica(running), "lag is not loss: the replica stays in use"
    finally:
        _replay(replica, on=True)
        running.stop()
