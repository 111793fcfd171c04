"""Hits carry the capture time's UTC offset (Hit.taken_offset_minutes) on the real Postgres, so pages can show
the photo's local day; a photo without a stated offset leaves it unset, never 0 (which is UTC itself)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from protos.semsearch.v1 import common_pb2, index_pb2
from tests.support.index import Running, item, make_config, start_server, unit

# 2021-07-04 01:30 at UTC+05:30 is still 2021-07-03 in UTC: the offset is what tells the two days apart.
TAKEN = 1625342400  # 2021-07-03T20:00:00Z


@pytest.fixture
def running(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[Running, dict[str, int], np.ndarray]]:
    running = start_server(make_config(tmp_path, pg_dsn))
    rng = np.random.default_rng(5)
    query = unit(rng)
    kinds = {"offset": common_pb2.PhotoFacts(taken_at=TAKEN, taken_offset_minutes=330),
             "west": common_pb2.PhotoFacts(taken_at=TAKEN, taken_offset_minutes=-420),
             "clock": common_pb2.PhotoFacts(taken_at=TAKEN),  # the camera's clock, no zone stated
             "undated": common_pb2.PhotoFacts()}
    items = []
    for n, (key, facts) in enumerate(kinds.items()):
        vec = query + 0.01 * n * unit(rng)
        it = item(vec / np.linalg.norm(vec), key)
        it.facts.CopyFrom(facts)
        items.append(it)
    results = running.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=30).results
    assert not any(res.HasField("error") for res in results), results
    ids = {key: res.id for key, res in zip(kinds, results, strict=True)}
    yield running, ids, query
    running.stop()


def offsets(hits: list[index_pb2.Hit]) -> dict[int, int | None]:
    return {h.id: h.taken_offset_minutes if h.HasField("taken_offset_minutes") else None for h in hits}


@pytest.mark.db
@pytest.mark.parametrize("exact", [False, True])
def test_search_hits_carry_the_stated_offset_only(running: tuple[Running, dict[str, int], np.ndarray],
                                                  exact: bool) -> None:
    r, ids, query = running
    hits = list(r.stub.Search(index_pb2.SearchRequest(vector=query.tolist(), k=10, exact=exact), timeout=10).hits)
    assert offsets(hits) == {ids["offset"]: 330, ids["west"]: -420, ids["clock"]: None, ids["undated"]: None}
    assert {h.id: h.HasField("taken_at") for h in hits} == {ids["offset"]: True, ids["west"]: True,
                                                           ids["clock"]: True, ids["undated"]: False}


@pytest.mark.db
def test_similar_and_date_sorted_hits_carry_it_too(running: tuple[Running, dict[str, int], np.ndarray]) -> None:
    r, ids, query = running
    similar = r.stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=ids["undated"], k=10), timeout=10).hits
    assert offsets(list(similar)) == {ids["offset"]: 330, ids["west"]: -420, ids["clock"]: None}
    by_date = r.stub.Search(index_pb2.SearchRequest(vector=query.tolist(), k=10, sort=index_pb2.SORT_DATE_DESC),
                            timeout=10).hits
    assert offsets(list(by_date))[ids["offset"]] == 330
