"""The recall target on the real database: the estimate is right, a miss widens the breadth, searches use it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from psycopg2.extensions import cursor

from index_service.config import HnswParams
from index_service.pool import run_tx
from index_service.recall import K, load, measure, neighbours, save
from index_service.repository import Repository
from index_service.tests.test_collections import create
from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, item, make_config, start_server

DIM, ROWS = 32, 3000
T = TypeVar("T")


@pytest.fixture
def small_graph(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[Running, np.ndarray, list[int]]]:
    """An index with a deliberately poor graph (m=6, ef_construction=12, ef 11) over 3,000 random 32-d rows."""
    config = make_config(tmp_path / "data", pg_dsn, hnsw=HnswParams(m=6, ef_construction=12, ef=11),
                         target_recall=0.999, recall_queries=80, recall_interval_s=3600.0)
    running = start_server(config)
    create(running, "r", "m@1", DIM)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids: list[int] = []
    for start in range(0, ROWS, 500):
        batch = [item(vectors[i], f"k{i}", model="m@1") for i in range(start, min(ROWS, start + 500))]
        reply = running.stub.Upsert(index_pb2.UpsertRequest(items=batch, collection="r"), timeout=60)
        ids += [r.id for r in reply.results]
    running.stub.BuildIndex(index_pb2.BuildIndexRequest(collection="r"), timeout=120)
    # The insert counts reach the statistics late (a backend flushes them at most once a second, an idle one
    # after 10 s), and the keeper measures nothing on a table that looks small: ANALYZE counts the rows now.
    repo: Repository = running.deps.repo
    table = repo.collection("r", 10).table
    run_tx(repo.pool, lambda cur: cur.execute(f"ANALYZE {table}"), 60.0)
    yield running, vectors, ids
    running.stop()


def _truth(vectors: np.ndarray, row: int) -> list[int]:
    order = np.argsort(-(vectors @ vectors[row]), kind="stable")
    return [int(i) for i in order if i != row][:K]


def test_exact_neighbours_match_numpy(small_graph: tuple[Running, np.ndarray, list[int]]) -> None:
    running, vectors, ids = small_graph
    repo: Repository = running.deps.repo
    coll = repo.collection("r", 10)
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    for row in (0, 17, 2999):
        got = repo_tx(repo, partial(neighbours, dialect=repo.dialect, c=coll, image_id=ids[row], ef=11, exact=True))
        assert [row_of[i] for i in got] == _truth(vectors, row)


def repo_tx(repo: Repository, work: Callable[[cursor], T]) -> T:
    return run_tx(repo.pool, work, 60.0)


def test_a_miss_widens_the_breadth_and_searches_get_better(small_graph: tuple[Running, np.ndarray, list[int]]
                                                            ) -> None:
    running, vectors, ids = small_graph
    repo: Repository = running.deps.repo
    keeper = running.deps.keeper
    assert keeper is not None
    coll = repo.collection("r", 10)

    def search_recall() -> float:
        found = 0
        for row in range(25, ROWS, 50):
            reply = running.stub.Search(index_pb2.SearchRequest(vector=vectors[row].tolist(), k=K + 1,
                                                                collection="r"), timeout=10)
            got = {ids.index(h.id) for h in reply.hits} - {row}
            found += len(got & set(_truth(vectors, row)))
        return found / (60 * K)

    before = search_recall()
    estimate = keeper.check(coll)
    assert estimate is not None and estimate.queries == 80 and estimate.ef == 11
    assert estimate.recall < 0.999  # this graph cannot find everything at ef 11
    # The sample agrees with what searches get (per-query recall on this graph spreads widely: 4 sigma).
    assert abs(estimate.recall - before) < 0.25
    stats = running.stub.Stats(index_pb2.StatsRequest(collection="r"), timeout=10)
    assert stats.search_breadth == 17 and stats.recall_queries == 80
    assert stats.recall_estimate == pytest.approx(estimate.recall) and stats.recall_target == pytest.approx(0.999)
    assert stats.recall_measured_at > 0
    # Widen until the target holds (each check measures again at the new breadth).
    for _ in range(12):
        latest = keeper.check(coll)
        if latest is not None and latest.recall >= 0.999:
            break
    assert repo.breadth.ef(coll.name) > 17
    assert search_recall() > before


def test_a_too_wide_breadth_comes_down_while_the_target_holds(small_graph: tuple[Running, np.ndarray, list[int]]
                                                               ) -> None:
    running, _, _ = small_graph
    repo: Repository = running.deps.repo
    keeper = running.deps.keeper
    assert keeper is not None
    coll = repo.collection("r", 10)
    wide = repo.breadth.grow_to("r", 10_000_000)  # as if the first guess had been made for far more rows
    assert wide > 200
    keeper.target = 0.9
    for _ in range(10):
        keeper.check(coll)
    estimate = repo.breadth.estimate("r")
    assert estimate is not None and estimate.narrower is not None
    assert repo.breadth.ef("r") < wide / 2  # it came down step by step (each step a new measurement) ...
    assert estimate.recall >= 0.9  # ... and the last measurement at the breadth in use still holds the target
    assert estimate.narrower.recall - estimate.narrower.stderr < 0.9 or repo.breadth.ef("r") == 11


def test_the_estimate_is_perfect_when_the_breadth_covers_the_collection(
        small_graph: tuple[Running, np.ndarray, list[int]]) -> None:
    running, _, _ = small_graph
    repo: Repository = running.deps.repo
    coll = repo.collection("r", 10)
    estimate = measure(lambda work, t: run_tx(repo.pool, work, t), repo.dialect, coll, 1000, 20, 60.0)
    assert estimate is not None and estimate.recall >= 0.98 and estimate.rows >= 1000


def test_without_a_target_the_breadth_is_fixed_and_nothing_measures(tmp_path: Path, pg_dsn: str) -> None:
    config = make_config(tmp_path / "data", pg_dsn, hnsw=HnswParams(m=4, ef_construction=8, ef=11), target_recall=0.0)
    running = start_server(config)
    try:
        assert running.deps.repo.breadth.fixed and running.deps.keeper is None
        assert running.deps.repo.breadth.grow_to("c1", 10_000_000) == 11
        stats = running.stub.Stats(index_pb2.StatsRequest(), timeout=10)
        assert (stats.search_breadth, stats.recall_target, stats.recall_estimate) == (11, 0.0, 0.0)
    finally:
        running.stop()


def test_a_restarted_service_searches_at_the_measured_breadth(small_graph: tuple[Running, np.ndarray, list[int]]
                                                              ) -> None:
    running, _, _ = small_graph
    keeper = running.deps.keeper
    assert keeper is not None
    estimate = keeper.check(running.deps.repo.collection("r", 10))
    assert estimate is not None and running.deps.repo.breadth.ef("r") == 17  # widened from the floor, 11
    # A second service on the same database (a restart, or another replica) starts where the first got to.
    second = start_server(running.config)
    try:
        ef, rows, kept, missed = second.deps.repo.breadth.state("r")
        # ... and remembers that the floor missed, so it never narrows back to it.
        assert ef == 17 and rows == running.deps.repo.breadth.state("r")[1] and missed == 11
        assert kept is not None and (kept.recall, kept.queries, kept.ef, kept.rows) == (
            estimate.recall, estimate.queries, estimate.ef, estimate.rows)
        assert kept.at == pytest.approx(estimate.at, abs=1e-3) and kept.stderr == pytest.approx(estimate.stderr)
        stats = second.stub.Stats(index_pb2.StatsRequest(collection="r"), timeout=10)
        assert stats.search_breadth == 17 and stats.recall_estimate == pytest.approx(estimate.recall)
        # A dropped collection takes its kept breadth with it.
        create(second, "gone", "m@1", DIM)
        repo_tx(second.deps.repo, lambda cur: save(cur, "gone", 40, 5000, None))
        assert [n for n, *_ in repo_tx(second.deps.repo, load)] == ["gone", "r"]
        second.stub.DropCollection(index_pb2.DropCollectionRequest(name="gone"), timeout=10)
        assert [n for n, *_ in repo_tx(second.deps.repo, load)] == ["r"]
    finally:
        second.stop()
