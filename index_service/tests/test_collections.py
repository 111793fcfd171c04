"""Collections and aliases on the real database: shapes, the default alias, refusals, shared originals."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import psycopg2
import pytest

from protos.semsearch.v1 import index_pb2
from semsearch_common import status
from tests.support.index import Running, item, unit


def refused(call: object) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code(), status.call_reason(caught.value)


def create(index: Running, name: str, model: str, dim: int) -> None:
    index.stub.CreateCollection(index_pb2.CreateCollectionRequest(name=name, model_id=model, dim=dim), timeout=10)


def test_the_existing_table_is_collection_c1_behind_default(index: Running) -> None:
    rng = np.random.default_rng(1)
    index.stub.Upsert(index_pb2.UpsertRequest(items=[item(unit(rng), "a")]), timeout=10)
    (c1,) = index.stub.ListCollections(index_pb2.ListCollectionsRequest(), timeout=5).collections
    assert (c1.name, c1.model_id, c1.dim, c1.count, list(c1.aliases)) == ("c1", "clip@1", 512, 1, ["default"])
    stats = index.stub.Stats(index_pb2.StatsRequest(), timeout=5)
    assert (stats.collection, stats.count) == ("c1", 1)
    assert index.stub.Stats(index_pb2.StatsRequest(collection="c1"), timeout=5).count == 1


def test_two_collections_of_different_dimensions_side_by_side(index: Running) -> None:
    rng = np.random.default_rng(2)
    old = [item(unit(rng), f"k{i}") for i in range(6)]
    old_ids = [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(items=old), timeout=10).results]
    create(index, "small", "tiny@2", 64)
    assert index.stub.Stats(index_pb2.StatsRequest(collection="small"), timeout=5).index_state == \
        index_pb2.INDEX_STATE_READY
    new = [item(unit(rng, 64), f"k{i}", model="tiny@2") for i in range(6)]
    results = index.stub.Upsert(index_pb2.UpsertRequest(items=new, collection="small"), timeout=10).results
    # An image keeps its id in every collection: links made before a re-embed still work after it.
    assert [r.id for r in results] == old_ids and all(r.created for r in results)
    hits = index.stub.Search(index_pb2.SearchRequest(vector=new[0].embedding, k=2, collection="small"),
                             timeout=5).hits
    assert hits[0].id == old_ids[0]
    # A vector of another model or dimension is refused, with a reason, whichever way the collection is named.
    assert refused(lambda: index.stub.Search(index_pb2.SearchRequest(
        vector=new[0].embedding, k=2), timeout=5)) == (grpc.StatusCode.FAILED_PRECONDITION, "DIMENSION_MISMATCH")
    assert refused(lambda: index.stub.Search(index_pb2.SearchRequest(
        vector=new[0].embedding, k=2, collection="small", model_id="clip@1"), timeout=5)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "MODEL_MISMATCH")
    assert refused(lambda: index.stub.Upsert(index_pb2.UpsertRequest(
        items=[item(unit(rng, 64), "x", model="clip@1")], collection="small"), timeout=5)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "MODEL_MISMATCH")
    assert refused(lambda: index.stub.Search(index_pb2.SearchRequest(
        vector=new[0].embedding, k=2, collection="nope"), timeout=5))[0] == grpc.StatusCode.NOT_FOUND


def test_alias_moves_and_drops(index: Running) -> None:
    rng = np.random.default_rng(3)
    index.stub.Upsert(index_pb2.UpsertRequest(items=[item(unit(rng), "a")]), timeout=10)
    create(index, "c2", "tiny@2", 32)
    index.stub.Upsert(index_pb2.UpsertRequest(items=[item(unit(rng, 32), "a", model="tiny@2"),
                                                     item(unit(rng, 32), "b", model="tiny@2")],
                                              collection="c2"), timeout=10)
    assert refused(lambda: index.stub.DropCollection(index_pb2.DropCollectionRequest(name="c1"), timeout=5)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "COLLECTION_IN_USE")
    assert refused(lambda: index.stub.SetAlias(index_pb2.SetAliasRequest(
        alias="default", collection="c2", expected_collection="c2"), timeout=5))[1] == "ALIAS_CHANGED"
    moved = index.stub.SetAlias(index_pb2.SetAliasRequest(alias="default", collection="c2",
                                                          expected_collection="c1"), timeout=5)
    assert moved.previous_collection == "c1"
    stats = index.stub.Stats(index_pb2.StatsRequest(), timeout=5)
    assert (stats.collection, stats.count, stats.dim) == ("c2", 2, 32)
    assert index.stub.DropCollection(index_pb2.DropCollectionRequest(name="c1"), timeout=5).dropped_count == 1
    names = [c.name for c in index.stub.ListCollections(index_pb2.ListCollectionsRequest(), timeout=5).collections]
    assert names == ["c2"]
    # Names taken by an alias or a collection, and bad names, are refused.
    assert refused(lambda: create(index, "default", "m@1", 8)) == (grpc.StatusCode.ALREADY_EXISTS, "NAME_TAKEN")
    assert refused(lambda: create(index, "c2", "m@1", 8))[0] == grpc.StatusCode.ALREADY_EXISTS
    assert refused(lambda: create(index, "Bad-Name", "m@1", 8))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(lambda: create(index, "ok", "m@1", 0))[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_a_shared_original_outlives_its_first_collection(index: Running) -> None:
    rng = np.random.default_rng(4)
    it = item(unit(rng), "shared")
    (old,) = index.stub.Upsert(index_pb2.UpsertRequest(items=[it]), timeout=10).results
    create(index, "c2", "tiny@2", 16)
    index.stub.Upsert(index_pb2.UpsertRequest(items=[item(unit(rng, 16), "shared", model="tiny@2")],
                                              collection="c2"), timeout=10)
    media = index.deps.media
    assert list(index.stub.Delete(index_pb2.DeleteRequest(ids=[old.id]), timeout=5).deleted) == [old.id]
    assert media.path_for(it.sha256).exists(), "c2 still holds a row of this original"
    removed: list[str] = []
    index.deps.repo.with_orphans([it.sha256], removed.extend)
    assert removed == [], "the orphan sweep knows every collection"
    chunks = index.stub.GetImage(index_pb2.GetImageRequest(id=old.id, collection="c2"), timeout=5)
    assert b"".join(c.data for c in chunks) == it.original
    index.stub.Delete(index_pb2.DeleteRequest(ids=[old.id], collection="c2"), timeout=5)
    assert not media.path_for(it.sha256).exists()


def test_list_images_pages_by_id(index: Running) -> None:
    rng = np.random.default_rng(5)
    items = [item(unit(rng), f"p{i}") for i in range(7)]
    ids = [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=10).results]
    seen: list[int] = []
    after = 0
    while page := index.stub.ListImages(index_pb2.ListImagesRequest(after_id=after, limit=3), timeout=5).images:
        seen += [m.id for m in page]
        after = page[-1].id
    assert seen == sorted(ids)


def test_upgrade_keeps_ids_and_model(index: Running) -> None:
    """The migration registers the pre-collections table as it is: the model recorded before stays."""
    with psycopg2.connect(index.config.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT c.table_name, a.alias FROM collections c JOIN aliases a ON a.collection = c.name")
        assert cur.fetchall() == [("images", "default")]
        cur.execute("SELECT column_default FROM information_schema.columns WHERE table_name = 'images' "
                    "AND column_name = 'id'")
        assert "image_ids" in cur.fetchone()[0]


def test_searches_never_fail_while_aliases_move_and_old_collections_drop(index: Running) -> None:
    rng = np.random.default_rng(6)
    keys = [f"s{i}" for i in range(30)]
    ids = [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(
        items=[item(unit(rng), k) for k in keys]), timeout=10).results]
    failures: list[str] = []
    searches = [0]
    done = threading.Event()

    def search(seed: int) -> None:
        pick = np.random.default_rng(seed)
        while not done.is_set():
            try:
                request = index_pb2.SearchSimilarRequest(id=int(pick.choice(ids)), k=3)
                assert len(index.stub.SearchSimilar(request, timeout=10).hits) == 3
                searches[0] += 1
            except (grpc.RpcError, AssertionError) as err:
                failures.append(repr(err))

    threads = [threading.Thread(target=search, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    previous = "c1"
    try:
        for n in range(2, 7):
            name, dim = f"c{n}", 16 * n
            create(index, name, f"m@{n}", dim)
            index.stub.Upsert(index_pb2.UpsertRequest(
                items=[item(unit(rng, dim), k, model=f"m@{n}") for k in keys], collection=name), timeout=10)
            index.stub.SetAlias(index_pb2.SetAliasRequest(alias="default", collection=name,
                                                          expected_collection=previous), timeout=10)
            index.stub.DropCollection(index_pb2.DropCollectionRequest(name=previous), timeout=30)
            previous = name
    finally:
        done.set()
        for t in threads:
            t.join()
    assert failures == [] and searches[0] > 20
    assert index.stub.Stats(index_pb2.StatsRequest(), timeout=5).collection == "c6"


def test_list_images_leaves_out_what_another_collection_holds_and_carries_bytes(index: Running) -> None:
    rng = np.random.default_rng(8)
    items = [item(unit(rng), f"b{i}") for i in range(5)]
    ids = [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=10).results]
    create(index, "c2", "m@2", 8)
    index.stub.Upsert(index_pb2.UpsertRequest(items=[item(unit(rng, 8), "b1", model="m@2")], collection="c2"),
                      timeout=10)
    page = index.stub.ListImages(index_pb2.ListImagesRequest(limit=10, missing_from="c2", include_bytes=True),
                                 timeout=5)
    by_id = {i: it for i, it in zip(ids, items, strict=True) if i != ids[1]}
    assert [m.id for m in page.images] == sorted(by_id)
    assert (page.last_id, page.left_out) == (max(ids), 1)
    assert list(page.originals) == [by_id[i].original for i in sorted(by_id)]
    assert list(page.thumbnails) == [by_id[i].thumbnail for i in sorted(by_id)]
    end = index.stub.ListImages(index_pb2.ListImagesRequest(after_id=page.last_id, limit=10), timeout=5)
    assert (list(end.images), end.last_id) == ([], 0)


def test_vectors_stay_in_their_rows_not_in_toast(index: Running) -> None:
    """A 512-d float32 vector is 2 KB: stored out of line, every exact scan and build would go through TOAST."""
    create(index, "inrow", "clip@1", 512)
    rng = np.random.default_rng(9)
    items = [item(unit(rng), f"r{i}") for i in range(200)]
    index.stub.Upsert(index_pb2.UpsertRequest(items=items, collection="inrow"), timeout=30)
    index.stub.Upsert(index_pb2.UpsertRequest(items=[item(unit(rng), "d")]), timeout=30)
    with psycopg2.connect(index.config.dsn) as conn, conn.cursor() as cur:
        for table in ("images_inrow", "images"):  # a new collection, and the first one (migration 14)
            cur.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,))
            assert cur.fetchone() == (["toast_tuple_target=8160"],)
        cur.execute("SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'images_inrow'::regclass")
        assert cur.fetchone() == (0,)  # nothing went out of line (thumbnails live in the media store)
