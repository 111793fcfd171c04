"""Every RPC of the index service through a real channel, on a real (embedded) Postgres."""

from __future__ import annotations

import hashlib

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos.semsearch.v1 import index_pb2
from semsearch_common import status
from tests.support.index import Running, item, unit

OK, INVALID, PRECONDITION = 0, grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.FAILED_PRECONDITION.value[0]


def upsert(index: Running, items: list[index_pb2.UpsertItem]) -> index_pb2.UpsertResponse:
    return index.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=30)


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()


def test_upsert_is_idempotent_and_reports_new_rows(index: Running) -> None:
    rng = np.random.default_rng(1)
    items = [item(unit(rng), f"k{i}") for i in range(5)]
    first = upsert(index, items)
    assert [r.created for r in first.results] == [True] * 5
    assert [r.sha256 for r in first.results] == [i.sha256 for i in items]
    again = upsert(index, items + [items[0]])
    assert [r.created for r in again.results] == [False] * 6
    assert [r.id for r in again.results[:5]] == [r.id for r in first.results]
    assert index.stub.Stats(index_pb2.StatsRequest(), timeout=5).count == 5


def test_bad_items_fail_alone(index: Running) -> None:
    rng = np.random.default_rng(2)
    good = item(unit(rng), "good")
    short = item(unit(rng, 256), "short")
    nan = item(unit(rng), "nan")
    nan.embedding[3] = float("nan")
    unnormalized = item(unit(rng) * 2, "unnormalized")
    no_model = item(unit(rng), "nomodel", model="")
    wrong_hash = item(unit(rng), "hash")
    wrong_hash.sha256 = hashlib.sha256(b"other").hexdigest()
    empty = item(unit(rng), "empty")
    empty.original = b""
    res = upsert(index, [short, good, nan, unnormalized, no_model, wrong_hash, empty]).results
    assert [r.error.code for r in res] == [PRECONDITION, OK, INVALID, INVALID, INVALID, INVALID, INVALID]
    assert "256" in res[0].error.message and "512" in res[0].error.message
    assert "normalized" in res[3].error.message and "model_id" in res[4].error.message
    assert res[1].created and res[1].id > 0
    assert index.stub.Stats(index_pb2.StatsRequest(), timeout=5).count == 1


def test_model_guard(index: Running) -> None:
    rng = np.random.default_rng(3)
    upsert(index, [item(unit(rng), "a", model="clip@1")])
    with pytest.raises(grpc.RpcError) as info:
        upsert(index, [item(unit(rng), "b", model="other@2")])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "clip@1" in info.value.details()
    mixed = upsert(index, [item(unit(rng), "c", model="other@2"), item(unit(rng), "d")]).results
    assert [r.error.code for r in mixed] == [PRECONDITION, OK]
    q = index_pb2.SearchRequest(vector=unit(rng).tolist(), k=3, model_id="other@2")
    assert code_of(lambda: index.stub.Search(q, timeout=5)) == grpc.StatusCode.FAILED_PRECONDITION
    q_dim = index_pb2.SearchRequest(vector=unit(rng, 64).tolist(), k=3)
    assert code_of(lambda: index.stub.Search(q_dim, timeout=5)) == grpc.StatusCode.FAILED_PRECONDITION
    assert index.stub.Stats(index_pb2.StatsRequest(), timeout=5).model_ids == ["clip@1"]


def test_search_scores_filters_min_score_exact(index: Running) -> None:
    rng = np.random.default_rng(4)
    vecs = [unit(rng) for _ in range(40)]
    items = [item(v, f"s{i}", label=("dog" if i % 4 == 0 else "cat"), source=("a" if i < 20 else "b"))
             for i, v in enumerate(vecs)]
    ids = [r.id for r in upsert(index, items).results]
    hits = index.stub.Search(index_pb2.SearchRequest(vector=vecs[7].tolist(), k=5), timeout=5).hits
    assert hits[0].id == ids[7] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    assert (hits[0].label, hits[0].source, hits[0].width, hits[0].height) == ("cat", "a", 640, 480)
    flt = index_pb2.Filter(labels=["dog"], source="b")
    hits = index.stub.Search(index_pb2.SearchRequest(vector=vecs[7].tolist(), k=5, filter=flt), timeout=5).hits
    assert len(hits) == 5 and all(h.label == "dog" and h.source == "b" for h in hits)
    hits = index.stub.Search(index_pb2.SearchRequest(vector=vecs[7].tolist(), k=10, min_score=0.5), timeout=5).hits
    assert [h.id for h in hits] == [ids[7]]
    exact = index.stub.Search(index_pb2.SearchRequest(vector=vecs[9].tolist(), k=40, exact=True), timeout=5).hits
    expected = np.argsort(-np.array([float(v @ vecs[9]) for v in vecs]))
    assert [h.id for h in exact] == [ids[i] for i in expected]


@pytest.mark.parametrize("k", [0, 1001])
def test_search_rejects_bad_k(index: Running, k: int) -> None:
    q = index_pb2.SearchRequest(vector=unit(np.random.default_rng(5)).tolist(), k=k)
    assert code_of(lambda: index.stub.Search(q, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT


def test_search_rejects_bad_vectors(index: Running) -> None:
    for vec in ([], [float("inf")] + [0.0] * 511, [0.0] * 512):
        q = index_pb2.SearchRequest(vector=vec, k=3)
        assert code_of(lambda q=q: index.stub.Search(q, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT


def test_search_similar_excludes_itself(index: Running) -> None:
    rng = np.random.default_rng(6)
    base = unit(rng)
    near = [(base + 0.05 * unit(rng)) / np.linalg.norm(base + 0.05 * unit(rng)) for _ in range(3)]
    items = [item(base, "base")] + [item(v / np.linalg.norm(v), f"n{i}") for i, v in enumerate(near)]
    items += [item(unit(rng), f"far{i}") for i in range(10)]
    ids = [r.id for r in upsert(index, items).results]
    hits = index.stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=ids[0], k=3), timeout=5).hits
    assert len(hits) == 3 and ids[0] not in [h.id for h in hits]
    assert {h.id for h in hits} == set(ids[1:4])
    missing = index_pb2.SearchSimilarRequest(id=999999, k=3)
    assert code_of(lambda: index.stub.SearchSimilar(missing, timeout=5)) == grpc.StatusCode.NOT_FOUND


def test_get_and_get_image(index: Running) -> None:
    rng = np.random.default_rng(7)
    big = item(unit(rng), "big", thumb=b"\x89PNG\r\n\x1a\n" + b"t" * 100)
    big.original = bytes(rng.integers(0, 256, 300_000, dtype=np.uint8))
    big.sha256 = hashlib.sha256(big.original).hexdigest()
    (res,) = upsert(index, [big]).results
    (meta,) = index.stub.Get(index_pb2.GetRequest(ids=[res.id, 424242]), timeout=5).images
    assert (meta.sha256, meta.label, meta.file_name, meta.size_bytes) == (big.sha256, "cat", "big.jpg", 300_000)
    assert (meta.model_id, meta.content_type, meta.width) == ("clip@1", "image/jpeg", 640) and meta.created_at > 0
    chunks = list(index.stub.GetImage(index_pb2.GetImageRequest(id=res.id), timeout=5))
    assert len(chunks) > 1 and chunks[0].content_type == "image/jpeg" and chunks[0].total_size == 300_000
    assert b"".join(c.data for c in chunks) == big.original
    # 1 was THUMBNAIL before the enum gained UNSPECIFIED = 0, which still means the original.
    thumb = list(index.stub.GetImage(index_pb2.GetImageRequest(id=res.id, variant=1), timeout=5))
    original = index_pb2.GetImageRequest(id=res.id, variant=index_pb2.IMAGE_VARIANT_ORIGINAL)
    assert b"".join(c.data for c in index.stub.GetImage(original, timeout=5)) == big.original
    assert thumb[0].content_type == "image/png" and b"".join(c.data for c in thumb) == big.thumbnail
    missing = index_pb2.GetImageRequest(id=31337)
    assert code_of(lambda: list(index.stub.GetImage(missing, timeout=5))) == grpc.StatusCode.NOT_FOUND


def test_delete_removes_rows_and_files(index: Running) -> None:
    rng = np.random.default_rng(8)
    items = [item(unit(rng), f"d{i}") for i in range(3)]
    ids = [r.id for r in upsert(index, items).results]
    media = index.deps.media
    assert all(media.exists(i.sha256) for i in items)
    deleted = index.stub.Delete(index_pb2.DeleteRequest(ids=[ids[0], ids[1], 777777]), timeout=5).deleted
    assert sorted(deleted) == sorted(ids[:2])
    assert not media.exists(items[0].sha256) and not media.exists(items[1].sha256) and media.exists(items[2].sha256)
    assert [m.id for m in index.stub.Get(index_pb2.GetRequest(ids=ids), timeout=5).images] == [ids[2]]
    again = upsert(index, [items[0]]).results[0]
    assert again.created and media.exists(items[0].sha256)


def test_list_labels_and_exists(index: Running) -> None:
    rng = np.random.default_rng(9)
    items = [item(unit(rng), f"l{i}", label=lb) for i, lb in enumerate(["cat", "dog", "cat", "emu"])]
    upsert(index, items)
    labels = index.stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=5).labels
    assert [(x.label, x.count) for x in labels] == [("cat", 2), ("dog", 1), ("emu", 1)]
    unknown = hashlib.sha256(b"nope").hexdigest()
    present = index.stub.Exists(index_pb2.ExistsRequest(sha256=[unknown, items[1].sha256, "junk"]), timeout=5)
    assert list(present.present) == [items[1].sha256]


def test_stats_and_build_index(index: Running) -> None:
    stats = index.stub.Stats(index_pb2.StatsRequest(), timeout=5)
    assert (stats.backend, stats.dim, stats.index_state, stats.count) == (
        index_pb2.BACKEND_PGVECTOR, 512, index_pb2.INDEX_STATE_READY, 0)
    c = index.config
    assert (stats.max_k, stats.max_upsert_items, stats.max_message_bytes) == (
        c.max_k, c.max_batch, c.max_message_mb * 1024 * 1024)
    assert stats.extension_version.startswith("0.8") and stats.postgres_version.startswith("18")
    assert stats.index_params["m"] == "16" and stats.index_params["built.m"] == "16"
    built = index.stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=30)
    assert (built.built, built.index_state) == (False, index_pb2.INDEX_STATE_READY)


def test_batch_limits(index: Running) -> None:
    assert code_of(lambda: upsert(index, [])) == grpc.StatusCode.INVALID_ARGUMENT
    rng = np.random.default_rng(10)
    too_many = [item(unit(rng), f"x{i}") for i in range(index.config.max_batch + 1)]
    assert code_of(lambda: upsert(index, too_many)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_and_reflection(index: Running) -> None:
    assert index.health() == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(index.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=5)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "semsearch.v1.Index" in names and "grpc.health.v1.Health" in names
    v1 = index.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                     request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="semsearch.v1.Index")
    (answer,) = list(v1(iter([request]), timeout=5))
    assert answer.file_descriptor_response.file_descriptor_proto, answer  # v1 answers as v1alpha does


def test_deadline_is_honoured(index: Running) -> None:
    q = index_pb2.SearchRequest(vector=unit(np.random.default_rng(11)).tolist(), k=3)
    code = code_of(lambda: index.stub.Search(q, timeout=0.0005))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_every_rpc_answers_without_a_client_deadline(index: Running) -> None:
    """grpcio reports "no deadline" as a huge remaining time; it once reached statement_timeout (INTERNAL)."""
    stub = index.stub  # every call below sets no timeout at all
    rng = np.random.default_rng(40)
    items = [item(unit(rng), f"nd{i}") for i in range(3)]
    ids = [r.id for r in stub.Upsert(index_pb2.UpsertRequest(items=items)).results]
    assert all(ids)
    assert len(stub.Search(index_pb2.SearchRequest(vector=items[0].embedding, k=3)).hits) == 3
    assert len(stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=ids[0], k=2)).hits) == 2
    assert [m.id for m in stub.Get(index_pb2.GetRequest(ids=ids)).images] == ids
    chunks = list(stub.GetImage(index_pb2.GetImageRequest(id=ids[0], variant=index_pb2.IMAGE_VARIANT_ORIGINAL)))
    assert b"".join(c.data for c in chunks) == items[0].original
    assert [lc.count for lc in stub.ListLabels(index_pb2.ListLabelsRequest()).labels] == [3]
    assert set(stub.Exists(index_pb2.ExistsRequest(sha256=[i.sha256 for i in items])).present) == {
        i.sha256 for i in items}
    assert stub.Stats(index_pb2.StatsRequest()).count == 3
    assert stub.BuildIndex(index_pb2.BuildIndexRequest()).index_state == index_pb2.INDEX_STATE_READY
    assert list(stub.Delete(index_pb2.DeleteRequest(ids=ids[:1])).deleted) == ids[:1]


def test_whole_call_errors_carry_their_reason(index: Running) -> None:
    rng = np.random.default_rng(41)
    with pytest.raises(grpc.RpcError) as caught:
        index.stub.Search(index_pb2.SearchRequest(vector=unit(rng, 256), k=3), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert status.call_reason(caught.value) == "DIMENSION_MISMATCH"
    upsert(index, [item(unit(rng), "m1", model="clip@1")])
    with pytest.raises(grpc.RpcError) as caught:
        index.stub.Search(index_pb2.SearchRequest(vector=unit(rng), k=3, model_id="other@2"), timeout=5)
    assert status.call_reason(caught.value) == "MODEL_MISMATCH"
    with pytest.raises(grpc.RpcError) as caught:
        index.stub.Get(index_pb2.GetRequest(ids=list(range(20_000))), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and status.call_reason(caught.value) == "TOO_LARGE"
    with pytest.raises(grpc.RpcError) as caught:
        list(index.stub.GetImage(index_pb2.GetImageRequest(id=10**9), timeout=5))
    assert status.call_reason(caught.value) == "NOT_FOUND"
