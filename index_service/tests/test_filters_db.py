"""Every photo filter, both date sorts with the relevance cutoff, and offset paging on the real Postgres:
k rows whenever k rows match, through the HNSW index (iterative scans) and its exact fallback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from protos.semsearch.v1 import common_pb2, index_pb2
from tests.support.index import Running, clustered, item, make_config, start_server

N = 3000


@dataclass(frozen=True)
class Row:
    """What the test stored for one image."""

    tags: frozenset[str]
    taken: int | None
    camera: tuple[str, str]
    lat: float | None
    lon: float | None


def make_row(i: int) -> Row:
    tags = {"rare"} if i % 250 == 0 else {"common"}  # 12 rare rows
    if i % 2:
        tags.add("odd")
    if i % 3 == 0:
        tags.add("three")
    taken = None if i % 5 == 0 else 1_500_000_000 + i * 3600
    camera = ("Canon", "EOS 5D") if i % 100 == 7 else ("FUJIFILM", "X100V") if i % 10 == 1 else ("", "")
    lat = lon = None
    if i % 40 == 3:  # 75 rows with a position, some on either side of the antimeridian
        lat, lon = -30.0 + (i % 60), (179.5 if i % 80 == 3 else -179.5) if i % 120 == 3 else 10.0 + i % 50
    return Row(frozenset(tags), taken, camera, lat, lon)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[Row]]:
    rng = np.random.default_rng(77)
    return clustered(rng, N, 60), [make_row(i) for i in range(N)]


@pytest.fixture
def loaded(tmp_path: Path, pg_dsn: str, data: tuple[np.ndarray, list[Row]]) -> Iterator[tuple[Running, list[int]]]:
    vecs, rows = data
    running = start_server(make_config(tmp_path, pg_dsn, defer_index=True))
    ids: list[int] = []
    for start in range(0, N, 500):
        batch = []
        for i in range(start, start + 500):
            r = rows[i]
            it = item(vecs[i], f"f{i}", label="", thumb=b"")
            it.tags.extend(sorted(r.tags))
            it.facts.CopyFrom(common_pb2.PhotoFacts(taken_at=r.taken, camera_make=r.camera[0],
                                                    camera_model=r.camera[1], latitude=r.lat, longitude=r.lon))
            batch.append(it)
        results = running.stub.Upsert(index_pb2.UpsertRequest(items=batch), timeout=60).results
        ids += [res.id for res in results]
    running.stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=120)
    yield running, ids
    running.stop()


FILTERS: list[tuple[index_pb2.Filter, Callable[[Row], bool]]] = [
    (index_pb2.Filter(tags_any=["rare"]), lambda r: "rare" in r.tags),
    (index_pb2.Filter(labels=["rare"], tags_any=["three"]), lambda r: bool({"rare", "three"} & r.tags)),
    (index_pb2.Filter(tags_all=["odd", "three"]), lambda r: {"odd", "three"} <= r.tags),
    (index_pb2.Filter(taken_from=1_500_000_000 + 100 * 3600, taken_until=1_500_000_000 + 130 * 3600),
     lambda r: r.taken is not None and 1_500_000_000 + 100 * 3600 <= r.taken < 1_500_000_000 + 130 * 3600),
    (index_pb2.Filter(camera="canon"), lambda r: r.camera[0] == "Canon"),
    (index_pb2.Filter(camera="x100v"), lambda r: r.camera[1] == "X100V"),
    (index_pb2.Filter(has_location=True), lambda r: r.lat is not None),
    (index_pb2.Filter(has_location=False, tags_any=["rare"]), lambda r: r.lat is None and "rare" in r.tags),
    (index_pb2.Filter(box=index_pb2.GeoBox(south=-30, west=20, north=0, east=40)),
     lambda r: r.lat is not None and r.lon is not None and -30 <= r.lat <= 0 and 20 <= r.lon <= 40),
    (index_pb2.Filter(box=index_pb2.GeoBox(south=-90, west=179, north=90, east=-179)),
     lambda r: r.lon is not None and abs(r.lon) >= 179),
]


def test_every_filter_returns_k_matching_rows(loaded: tuple[Running, list[int]],
                                              data: tuple[np.ndarray, list[Row]]) -> None:
    running, ids = loaded
    vecs, rows = data
    row_of = dict(zip(ids, rows, strict=True))
    for f, matches in FILTERS:
        expected = sum(matches(r) for r in rows)
        assert expected > 0, f
        for exact in (False, True):
            for q in (5, 1234):
                hits = running.stub.Search(index_pb2.SearchRequest(vector=vecs[q].tolist(), k=10, filter=f,
                                                                   exact=exact), timeout=10).hits
                assert len(hits) == min(10, expected), (f, exact)
                assert all(matches(row_of[h.id]) for h in hits), f
        similar = running.stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=ids[8], k=200, filter=f),
                                             timeout=10).hits
        assert len(similar) == min(200, expected - matches(rows[8])), f
        assert all(matches(row_of[h.id]) for h in similar) and ids[8] not in {h.id for h in similar}


def scores(vecs: np.ndarray, q: int) -> np.ndarray:
    return (vecs.astype(np.float64) @ vecs[q].astype(np.float64))


@pytest.mark.parametrize("similar", [False, True])
def test_date_sorts_keep_the_relevant_hits_in_date_order(loaded: tuple[Running, list[int]],
                                                         data: tuple[np.ndarray, list[Row]], similar: bool) -> None:
    running, ids = loaded
    vecs, rows = data
    q, gap = 42, 0.25
    s = scores(vecs, q)
    if similar:
        s[q] = -2  # the image itself is left out
    best = s.max()
    relevant = {ids[i] for i in np.flatnonzero(s >= best - gap + 1e-4)}
    borderline = {ids[i] for i in np.flatnonzero(abs(s - (best - gap)) <= 1e-4)}
    assert 30 < len(relevant) < 1000  # the cutoff matters and the pool holds every relevant hit
    taken = {ids[i]: rows[i].taken for i in range(N)}
    for sort, sign in ((index_pb2.SORT_DATE_DESC, -1), (index_pb2.SORT_DATE_ASC, 1)):
        for exact in (True, False):
            common = {"k": 1000, "sort": sort, "cutoff": index_pb2.Cutoff(gap=gap), "exact": exact}
            if similar:
                hits = running.stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=ids[q], **common), timeout=10).hits
            else:
                hits = running.stub.Search(index_pb2.SearchRequest(vector=vecs[q].tolist(), **common), timeout=10).hits
            got = [h.id for h in hits]
            assert relevant <= set(got) <= relevant | borderline, (sort, exact)
            dated = [h.taken_at for h in hits if h.HasField("taken_at")]
            assert dated == sorted(dated, key=lambda t: sign * t) and len(dated) < len(hits)
            assert all(not h.HasField("taken_at") for h in hits[len(dated):])  # undated last
            assert [h.taken_at for h in hits[:len(dated)]] == [taken[i] for i in got[:len(dated)]]
    for wide in (gap, 1.05):  # k=10 fetches 100 candidates first, then 4x more while the last is relevant
        common = {"sort": index_pb2.SORT_DATE_DESC, "cutoff": index_pb2.Cutoff(gap=wide), "exact": True}
        full = running.stub.Search(index_pb2.SearchRequest(vector=vecs[q].tolist(), k=1000, **common), timeout=10)
        top = running.stub.Search(index_pb2.SearchRequest(vector=vecs[q].tolist(), k=10, **common), timeout=10)
        assert [h.id for h in top.hits] == [h.id for h in full.hits][:10]
    if not similar:  # without a cutoff the server's default (INDEX_DATE_CUTOFF_GAP, 0.05) applies
        default = running.stub.Search(index_pb2.SearchRequest(vector=vecs[7].tolist(), k=1000, exact=True,
                                                              sort=index_pb2.SORT_DATE_DESC), timeout=10).hits
        s7 = scores(vecs, 7)
        assert {h.id for h in default} == {ids[i] for i in np.flatnonzero(s7 >= s7.max() - 0.05)}


def test_relevance_cutoff_marks_and_offset_pages(loaded: tuple[Running, list[int]],
                                                 data: tuple[np.ndarray, list[Row]]) -> None:
    running, _ = loaded
    vecs, _ = data
    vec = vecs[7].tolist()
    whole = running.stub.Search(index_pb2.SearchRequest(vector=vec, k=60, exact=True,
                                                        cutoff=index_pb2.Cutoff(fraction=0.9)), timeout=10).hits
    assert len(whole) == 60  # below the cutoff: marked, not dropped
    best = whole[0].score
    assert [h.below_cutoff for h in whole] == [h.score < best * 0.9 for h in whole]
    assert any(h.below_cutoff for h in whole) and not whole[0].below_cutoff
    for exact in (True, False):
        pages = [running.stub.Search(index_pb2.SearchRequest(vector=vec, k=20, offset=o, exact=exact),
                                     timeout=10).hits for o in (0, 20, 40)]
        assert [h.id for p in pages for h in p] == [h.id for h in whole] or not exact
        assert len({h.id for p in pages for h in p}) == 60
    dated = running.stub.Search(index_pb2.SearchRequest(vector=vec, k=90, sort=index_pb2.SORT_DATE_ASC,
                                                        cutoff=index_pb2.Cutoff(gap=0.3), exact=True), timeout=10).hits
    paged = [h.id for o in (0, 20, 40, 60) for h in running.stub.Search(index_pb2.SearchRequest(
        vector=vec, k=20, offset=o, sort=index_pb2.SORT_DATE_ASC, cutoff=index_pb2.Cutoff(gap=0.3), exact=True),
        timeout=10).hits]
    assert paged == [h.id for h in dated] and 40 < len(paged) < 90  # the relevant hits only, in pages
    tail = running.stub.Search(index_pb2.SearchRequest(vector=vec, k=10, offset=990), timeout=10).hits
    assert len(tail) == 10
