"""Tags, facts, filters, date sorts and offsets through the servicer, over the fake store (no Postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from index_service.config import Config
from index_service.server import create_server
from index_service.tests.fake_store import FakeDeps, unit_vector
from protos.semsearch.v1 import common_pb2, index_pb2, index_pb2_grpc
from semsearch_common.channels import channel
from tests.support.index import item

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def deps() -> FakeDeps:
    return FakeDeps()


@pytest.fixture
def stub(tmp_path: Path, deps: FakeDeps) -> Iterator[index_pb2_grpc.IndexStub]:
    server = create_server(Config(host="127.0.0.1", port=0, dsn="", data_dir=tmp_path, max_batch=8, max_k=10),
                           deps)
    server.set_serving(True)
    with channel(f"127.0.0.1:{server.port}") as chan:
        yield index_pb2_grpc.IndexStub(chan)
    server.stop(0)


def photo(key: str, seed: int, label: str = "", tags: tuple[str, ...] = (), **facts: object) -> index_pb2.UpsertItem:
    it = item(unit_vector(seed), key, label=label)
    it.tags.extend(tags)
    it.facts.CopyFrom(common_pb2.PhotoFacts(**facts))  # type: ignore[arg-type]
    it.file_mtime_ns = 1_700_000_000_123_456_789
    return it


def failure(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), info.value.details() or ""


def test_upsert_stores_tags_and_facts_and_a_second_upsert_adds_tags(stub: index_pb2_grpc.IndexStub) -> None:
    first = photo("a", 1, label="cat", tags=(" pets ", "cat"), taken_at=1_600_000_000, taken_offset_minutes=120,
                  camera_make="Canon", latitude=48.8, longitude=2.3)
    (r,) = stub.Upsert(index_pb2.UpsertRequest(items=[first]), timeout=5).results
    (meta,) = stub.Get(index_pb2.GetRequest(ids=[r.id]), timeout=5).images
    assert list(meta.tags) == ["cat", "pets"] and meta.label == "cat"
    assert (meta.facts.taken_at, meta.facts.taken_offset_minutes, meta.facts.camera_make) == (
        1_600_000_000, 120, "Canon")
    assert meta.facts.latitude == pytest.approx(48.8) and meta.file_mtime_ns == 1_700_000_000_123_456_789
    again = photo("a", 1, label="kitten", tags=("sofa",))
    (r2,) = stub.Upsert(index_pb2.UpsertRequest(items=[again]), timeout=5).results
    assert (r2.id, r2.created) == (r.id, False)
    (meta,) = stub.Get(index_pb2.GetRequest(ids=[r.id]), timeout=5).images
    assert list(meta.tags) == ["cat", "kitten", "pets", "sofa"]


def test_bad_tags_and_facts_fail_their_item_alone(stub: index_pb2_grpc.IndexStub) -> None:
    items = [photo("ok", 1, tags=("fine",)), photo("nul", 2, tags=("bad\x00tag",)), photo("long", 3, tags=("x" * 101,)),
             photo("many", 4, tags=tuple(f"t{i}" for i in range(65))), photo("lat", 5, latitude=95.0, longitude=1.0)]
    results = stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=5).results
    assert results[0].created and not results[0].HasField("error")
    messages = [r.error.message for r in results[1:]]
    assert all(r.error.code == INVALID.value[0] for r in results[1:])
    assert "'bad\\x00tag'" in messages[0] and "control" in messages[0]
    assert "longer than 100" in messages[1] and "65 tags" in messages[2] and "latitude 95.0" in messages[3]


def test_update_tags_and_list_tags(stub: index_pb2_grpc.IndexStub) -> None:
    ids = [r.id for r in stub.Upsert(index_pb2.UpsertRequest(
        items=[photo("a", 1, label="cat"), photo("b", 2, label="dog"), photo("c", 3)]), timeout=5).results]
    out = stub.UpdateTags(index_pb2.UpdateTagsRequest(ids=[ids[2], ids[0], 999], add=[" holiday "], remove=["cat"]),
                          timeout=5)
    assert list(out.updated) == sorted([ids[0], ids[2]])  # 999 does not exist
    tags = stub.ListTags(index_pb2.ListTagsRequest(), timeout=5).tags
    assert [(t.tag, t.count) for t in tags] == [("dog", 1), ("holiday", 2)]
    labels = stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=5).labels
    assert [(lb.label, lb.count) for lb in labels] == [("dog", 1), ("holiday", 2)]
    (meta,) = stub.Get(index_pb2.GetRequest(ids=[ids[0]]), timeout=5).images
    assert (meta.label, list(meta.tags)) == ("holiday", ["holiday"])  # its label tag was removed
    for request, words in [
        (index_pb2.UpdateTagsRequest(ids=[ids[0]], add=["a\nb"]), "control"),
        (index_pb2.UpdateTagsRequest(ids=[], add=["x"]), "no ids"),
        (index_pb2.UpdateTagsRequest(ids=[ids[0]], add=["x"], remove=["x "]), "both added and removed"),
        (index_pb2.UpdateTagsRequest(ids=[ids[0]], add=[""]), "empty"),
    ]:
        code, details = failure(lambda r=request: stub.UpdateTags(r, timeout=5))
        assert code == INVALID and words in details


def test_filters_date_sort_and_offset(stub: index_pb2_grpc.IndexStub) -> None:
    items = [photo(f"p{i}", 10 + i, tags=("even",) if i % 2 == 0 else ("odd",), taken_at=1000 * i,
                   camera_model="X100" if i < 3 else "") for i in range(6)]
    ids = [r.id for r in stub.Upsert(index_pb2.UpsertRequest(items=items[:4]), timeout=5).results]
    ids += [r.id for r in stub.Upsert(index_pb2.UpsertRequest(items=items[4:]), timeout=5).results]
    vec = unit_vector(10).tolist()

    def search(**kw: object) -> list[index_pb2.Hit]:
        return list(stub.Search(index_pb2.SearchRequest(vector=vec, k=kw.pop("k", 10), **kw), timeout=5).hits)  # type: ignore[arg-type]

    assert {h.id for h in search(filter=index_pb2.Filter(tags_any=["even"]))} == {ids[0], ids[2], ids[4]}
    assert {h.id for h in search(filter=index_pb2.Filter(taken_from=1000, taken_until=3000))} == {ids[1], ids[2]}
    assert {h.id for h in search(filter=index_pb2.Filter(camera="x100"))} == set(ids[:3])
    dated = search(sort=index_pb2.SORT_DATE_DESC, cutoff=index_pb2.Cutoff(gap=2))
    assert [h.taken_at for h in dated] == [5000, 4000, 3000, 2000, 1000, 0]
    assert [h.id for h in search(k=2, offset=2)] == [h.id for h in search()][2:4]
    code, details = failure(lambda: search(k=5, offset=6))
    assert code == INVALID and "offset + k must not exceed 10" in details
    code, details = failure(lambda: search(cutoff=index_pb2.Cutoff(fraction=1.5)))
    assert code == INVALID and "fraction" in details
    code, details = failure(lambda: search(filter=index_pb2.Filter(box=index_pb2.GeoBox(south=10, north=5))))
    assert code == INVALID and "south <= north" in details
    code, details = failure(lambda: search(filter=index_pb2.Filter(tags_all=["a\x01"])))
    assert code == INVALID and "control" in details
    marked = search(cutoff=index_pb2.Cutoff(gap=0.0))
    assert len(marked) == 6 and not marked[0].below_cutoff and all(h.below_cutoff for h in marked[1:])


def test_tag_rpcs_answer_without_a_client_deadline_and_the_store_gets_the_default(
        stub: index_pb2_grpc.IndexStub, deps: FakeDeps) -> None:
    (r,) = stub.Upsert(index_pb2.UpsertRequest(items=[photo("nd", 1, label="cat")])).results
    assert list(stub.UpdateTags(index_pb2.UpdateTagsRequest(ids=[r.id], add=["x"])).updated) == [r.id]
    assert [(t.tag, t.count) for t in stub.ListTags(index_pb2.ListTagsRequest()).tags] == [("cat", 1), ("x", 1)]
    assert all(0 < (deps.repo.timeouts[name] or 0) <= 120 for name in ("update_tags", "tags"))
