"""IndexServicer through a real in-process channel, over fakes of the repository and media store (no Postgres)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from index_service.config import Config
from index_service.domain import StorageFull, Unavailable
from index_service.server import create_server
from index_service.tests.fake_store import DIM, FakeDeps, unit_vector
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common import status
from semsearch_common.channels import channel
from tests.support.index import item

OK, INVALID, PRECONDITION = 0, grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.FAILED_PRECONDITION.value[0]


@pytest.fixture
def deps() -> FakeDeps:
    return FakeDeps()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(host="127.0.0.1", port=0, dsn="", data_dir=tmp_path, max_batch=4, max_k=10)


@pytest.fixture
def stub(config: Config, deps: FakeDeps) -> Iterator[index_pb2_grpc.IndexStub]:
    server = create_server(config, deps)
    server.set_serving(True)
    with channel(f"127.0.0.1:{server.port}") as chan:
        yield index_pb2_grpc.IndexStub(chan)
    server.stop(0)


def failure(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), status.call_reason(info.value)


def upsert(stub: index_pb2_grpc.IndexStub, *items: index_pb2.UpsertItem) -> list[index_pb2.UpsertResult]:
    return list(stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=5).results)


def test_each_bad_item_fails_alone_with_its_code_and_reason(stub, deps: FakeDeps) -> None:
    good = item(unit_vector(1), "good")
    short = item(unit_vector(2, DIM - 1), "short")
    nan = item(unit_vector(3), "nan")
    nan.embedding[0] = float("nan")
    no_model = item(unit_vector(4), "nomodel", model="")
    wrong_hash = item(unit_vector(5), "hash")
    wrong_hash.sha256 = hashlib.sha256(b"other").hexdigest()
    big_thumb = item(unit_vector(6), "thumb", thumb=b"t" * (4 * 1024 * 1024 + 1))
    results = upsert(stub, short, good, nan, no_model)
    results += upsert(stub, wrong_hash, big_thumb)
    assert [r.error.code for r in results] == [PRECONDITION, OK, INVALID, INVALID, INVALID,
                                               grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]]
    assert [status.reason(r.error) for r in results] == ["DIMENSION_MISMATCH", "", "INVALID_ARGUMENT",
                                                         "INVALID_ARGUMENT", "INVALID_ARGUMENT", "TOO_LARGE"]
    assert results[1].created and results[1].id == 1 and [r.sha256 for r in results[:2]] == [short.sha256, good.sha256]
    assert len(deps.repo.rows) == 1


def test_a_batch_refused_only_by_the_model_guard_fails_whole(stub) -> None:
    upsert(stub, item(unit_vector(1), "a", model="clip@1"))
    assert failure(lambda: upsert(stub, item(unit_vector(2), "b", model="other@2"))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "MODEL_MISMATCH")
    mixed = upsert(stub, item(unit_vector(3), "c", model="other@2"), item(unit_vector(4), "d"))
    assert [r.error.code for r in mixed] == [PRECONDITION, OK]
    query = index_pb2.SearchRequest(vector=unit_vector(5).tolist(), k=3, model_id="other@2")
    assert failure(lambda: stub.Search(query, timeout=5)) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_MISMATCH")


def test_whole_call_validation(stub) -> None:
    v = unit_vector(1).tolist()
    too_large = (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_LARGE")
    invalid = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert failure(lambda: upsert(stub)) == invalid
    assert failure(lambda: upsert(stub, *[item(unit_vector(i), f"x{i}") for i in range(5)])) == too_large
    for k in (0, 11):
        assert failure(lambda k=k: stub.Search(index_pb2.SearchRequest(vector=v, k=k), timeout=5)) == invalid
    for bad in ([], [float("inf")] + v[1:], [0.0] * DIM, [x * 2 for x in v]):
        assert failure(lambda bad=bad: stub.Search(index_pb2.SearchRequest(vector=bad, k=3), timeout=5)) == invalid
    nan_score = index_pb2.SearchRequest(vector=v, k=3, min_score=float("nan"))
    assert failure(lambda: stub.Search(nan_score, timeout=5)) == invalid
    assert failure(lambda: stub.Get(index_pb2.GetRequest(ids=range(41)), timeout=5)) == too_large
    assert failure(lambda: stub.Delete(index_pb2.DeleteRequest(ids=range(41)), timeout=5)) == too_large
    missing = (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert failure(lambda: list(stub.GetImage(index_pb2.GetImageRequest(id=7), timeout=5))) == missing
    assert failure(lambda: stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=7, k=3), timeout=5)) == missing
    junk = stub.Exists(index_pb2.ExistsRequest(sha256=["not-a-hash", "A" * 64]), timeout=5)
    assert list(junk.present) == []


def test_every_rpc_answers_without_a_client_deadline_and_the_store_gets_the_default(stub, deps, config) -> None:
    items = [item(unit_vector(i), f"nd{i}", label=("dog" if i else "cat")) for i in range(3)]
    ids = [r.id for r in stub.Upsert(index_pb2.UpsertRequest(items=items)).results]
    assert ids == [1, 2, 3]
    hits = stub.Search(index_pb2.SearchRequest(vector=items[0].embedding, k=2)).hits
    assert hits[0].id == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5) and len(hits) == 2
    similar = stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=1, k=5, filter=index_pb2.Filter(labels=["dog"])))
    assert sorted(h.id for h in similar.hits) == [2, 3]
    assert [m.id for m in stub.Get(index_pb2.GetRequest(ids=[3, 1, 99])).images] == [3, 1]
    original = index_pb2.GetImageRequest(id=2, variant=index_pb2.IMAGE_VARIANT_ORIGINAL)
    chunks = list(stub.GetImage(original))
    assert chunks[0].total_size == len(items[1].original) and b"".join(c.data for c in chunks) == items[1].original
    thumb = list(stub.GetImage(index_pb2.GetImageRequest(id=2, variant=index_pb2.IMAGE_VARIANT_THUMBNAIL)))
    assert b"".join(c.data for c in thumb) == items[1].thumbnail and thumb[0].content_type == "image/jpeg"
    assert [(lc.label, lc.count) for lc in stub.ListLabels(index_pb2.ListLabelsRequest()).labels] == [
        ("cat", 1), ("dog", 2)]
    assert list(stub.Exists(index_pb2.ExistsRequest(sha256=[items[2].sha256])).present) == [items[2].sha256]
    stats = stub.Stats(index_pb2.StatsRequest())
    assert (stats.count, stats.backend, stats.max_k, stats.max_upsert_items, stats.max_ids_per_request) == (
        3, index_pb2.BACKEND_PGVECTOR, 10, 4, 40)
    built = stub.BuildIndex(index_pb2.BuildIndexRequest())
    assert built.built and built.index_state == index_pb2.INDEX_STATE_READY
    assert list(stub.Delete(index_pb2.DeleteRequest(ids=[1, 42])).deleted) == [1]
    bounded = {name: t for name, t in deps.repo.timeouts.items() if name != "build_index"}
    assert all(0 < t <= config.default_deadline_s for t in bounded.values()), bounded  # type: ignore[operator]
    assert deps.repo.timeouts["build_index"] is None  # the one unbounded method


def test_a_client_deadline_reaches_the_store(stub, deps: FakeDeps) -> None:
    stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=2)
    # The caller's 2 s, not the server's default (gRPC may round the deadline it sends up by a few ms).
    assert 0 < deps.repo.timeouts["labels"] <= 2.1  # type: ignore[operator]


def test_store_errors_leave_with_their_reason_and_reach_the_error_hook(stub, deps: FakeDeps) -> None:
    deps.repo.fail = Unavailable("the database went away")
    assert failure(lambda: stub.Stats(index_pb2.StatsRequest(), timeout=5)) == (
        grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    deps.repo.fail = StorageFull("the media disk is full")
    assert failure(lambda: upsert(stub, item(unit_vector(1), "full"))) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "MEDIA_STORE_FULL")
    assert [type(e) for e in deps.errors] == [Unavailable, StorageFull]
    deps.repo.fail = None
    deps.repo.ready = False
    assert failure(lambda: stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=5)) == (
        grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")


def test_a_row_whose_file_is_missing_is_not_found(stub, deps: FakeDeps) -> None:
    (stored,) = upsert(stub, item(unit_vector(1), "gone"))
    deps.media.missing.add(stored.sha256)
    assert failure(lambda: list(stub.GetImage(index_pb2.GetImageRequest(id=stored.id), timeout=5))) == (
        grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
