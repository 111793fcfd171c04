"""Collections of half-size vectors on the real database: stored, indexed, searched, half the bytes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, clustered, item


def _fill(index: Running, name: str, vector_type: str, vectors: np.ndarray) -> list[int]:
    index.stub.CreateCollection(index_pb2.CreateCollectionRequest(name=name, model_id="m@1", dim=vectors.shape[1],
                                                                  vector_type=vector_type), timeout=30)
    ids: list[int] = []
    for start in range(0, len(vectors), 400):
        batch = [item(vectors[i], f"{name}{i}", model="m@1") for i in range(start, min(len(vectors), start + 400))]
        ids += [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(items=batch, collection=name),
                                                timeout=60).results]
    return ids


def test_float16_collection_finds_what_float32_finds_in_less_space(index: Running) -> None:
    vectors = clustered(np.random.default_rng(3), 2000, 20, dim=256)
    full = _fill(index, "full", "float32", vectors)
    half = _fill(index, "half", "float16", vectors)
    listed = {c.name: c for c in index.stub.ListCollections(index_pb2.ListCollectionsRequest(), timeout=10).collections}
    assert (listed["full"].vector_type, listed["half"].vector_type) == ("float32", "float16")
    agree = 0
    for row in range(0, 2000, 100):
        query = vectors[row].tolist()
        a = index.stub.Search(index_pb2.SearchRequest(vector=query, k=10, collection="full"), timeout=10).hits
        b = index.stub.Search(index_pb2.SearchRequest(vector=query, k=10, collection="half"), timeout=10).hits
        assert b[0].id == half[row] and b[0].score == pytest.approx(1.0, abs=1e-3)
        agree += len({full.index(h.id) for h in a} & {half.index(h.id) for h in b})
    assert agree / 200 >= 0.95
    s_full = index.stub.Stats(index_pb2.StatsRequest(collection="full"), timeout=10)
    s_half = index.stub.Stats(index_pb2.StatsRequest(collection="half"), timeout=10)
    assert s_half.vector_type == "float16" and s_half.index_state == index_pb2.INDEX_STATE_READY
    assert s_half.index_bytes < 0.75 * s_full.index_bytes


def test_an_unknown_vector_type_is_refused(index: Running) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        index.stub.CreateCollection(index_pb2.CreateCollectionRequest(name="x", model_id="m@1", dim=8,
                                                                      vector_type="int4"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "float16" in (caught.value.details() or "")
