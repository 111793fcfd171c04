"""Migration 6 (photo facts and tags) and the tag RPCs against the real embedded Postgres."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import psycopg2
import pytest

from index_service import catalog, migrations, tag_counts
from index_service.dialects import PgVector
from index_service.migrations import Context, migrate
from protos.semsearch.v1 import common_pb2, index_pb2
from tests.support.index import Running, item, make_config, start_server, unit

OLD_COLUMNS = migrations.COLUMNS.split(",\n    taken_at")[0] + "\n"


def old_schema(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database as the code before migration 6 left it: collection c1 (default) and c2, rows with labels."""
    with monkeypatch.context() as m:
        # Migration 13 counts tags: it comes after 6, as the tag counts' triggers do.
        m.setattr(migrations, "MIGRATIONS", [step for step in migrations.MIGRATIONS if step[0] not in (6, 13)])
        m.setattr(tag_counts, "install", lambda cur, name, table: None)
        m.setattr(migrations, "COLUMNS", OLD_COLUMNS)
        m.setattr(catalog, "COLUMNS", OLD_COLUMNS)
        m.setattr(catalog, "photo_indexes", lambda table: [])
        conn = psycopg2.connect(dsn)
        migrate(conn, Context("pgvector", 4))
        with conn.cursor() as cur:
            catalog.create(cur, PgVector(), "c2", "old@1", 4)
            rows = [("images", "cat", "[1,0,0,0]"), ("images", " dog ", "[0,1,0,0]"), ("images", "", "[0,0,1,0]"),
                    ("images_c2", "bird", "[0,0,0,1]")]
            for n, (table, label, vec) in enumerate(rows):
                cur.execute(f"INSERT INTO {table} (v, sha256, label, model_id) VALUES (%s, %s, %s, 'old@1')",
                            (vec, f"{n:064x}", label))
        conn.commit()
        conn.close()


def test_migration_6_gives_every_collection_tags_from_labels(tmp_path: Path, pg_dsn: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    old_schema(pg_dsn, monkeypatch)
    running = start_server(make_config(tmp_path, pg_dsn, dim=4))
    try:
        stub = running.stub
        tags = stub.ListTags(index_pb2.ListTagsRequest(), timeout=5).tags
        assert [(t.tag, t.count) for t in tags] == [("cat", 1), ("dog", 1)]  # trimmed; "" is no tag
        assert [(t.tag, t.count) for t in stub.ListTags(index_pb2.ListTagsRequest(collection="c2"), timeout=5).tags] \
            == [("bird", 1)]
        labels = stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=5).labels
        assert [(lb.label, lb.count) for lb in labels] == [("", 1), ("cat", 1), ("dog", 1)]
        hits = stub.Search(index_pb2.SearchRequest(vector=[0, 1, 0, 0], k=3, filter=index_pb2.Filter(
            labels=["dog"])), timeout=5).hits
        assert [(h.label, list(h.tags)) for h in hits] == [("dog", ["dog"])]
        (meta,) = stub.Get(index_pb2.GetRequest(ids=[hits[0].id]), timeout=5).images
        assert (meta.file_mtime_ns, meta.facts.HasField("taken_at"), meta.facts.camera_make) == (0, False, "")
        # Old rows take new tags and facts: the new columns are there on every table.
        new = item(np.array([0.6, 0.8, 0, 0], dtype=np.float32), "new", label="cat", model="old@1")
        new.facts.CopyFrom(common_pb2.PhotoFacts(taken_at=5))
        assert stub.Upsert(index_pb2.UpsertRequest(items=[new], collection="c2"), timeout=5).results[0].created
    finally:
        running.stop()
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM index_migrations WHERE version = 6")
        assert cur.fetchone() is not None
        cur.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE '%%tags' OR indexname LIKE '%%taken_at' "
                    "ORDER BY 1")
        assert sorted(r[0] for r in cur.fetchall()) == ["images_c2_tags", "images_c2_taken_at", "images_tags",
                                                         "images_taken_at"]
        cur.execute("SELECT label, tags FROM images ORDER BY id")
        assert cur.fetchall() == [("cat", ["cat"]), (" dog ", ["dog"]), ("", [])]


def test_adopted_prototype_rows_can_be_tagged_and_filtered(tmp_path: Path, pg_dsn: str) -> None:
    rng = np.random.default_rng(40)
    vecs = [unit(rng) for _ in range(6)]
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE image_table (v REAL[], location VARCHAR, id SERIAL PRIMARY KEY)")
        for i, v in enumerate(vecs):
            cur.execute("INSERT INTO image_table (v, location) VALUES (%s, %s)", (v.tolist(), f"/p/{i}.jpg"))
    running = start_server(make_config(tmp_path, pg_dsn))
    try:
        stub = running.stub
        labels = stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=5).labels
        assert [(lb.label, lb.count) for lb in labels] == [("", 6)]
        out = stub.UpdateTags(index_pb2.UpdateTagsRequest(ids=[2, 4, 6], add=["proto"]), timeout=5)
        assert list(out.updated) == [2, 4, 6]
        hits = stub.Search(index_pb2.SearchRequest(vector=vecs[0].tolist(), k=6, filter=index_pb2.Filter(
            tags_any=["proto"])), timeout=5).hits
        assert sorted(h.id for h in hits) == [2, 4, 6] and {h.label for h in hits} == {"proto"}
    finally:
        running.stop()


def tagged(key: str, seed: int, label: str = "", tags: tuple[str, ...] = (), **facts: object) -> index_pb2.UpsertItem:
    it = item(unit(np.random.default_rng(seed)), key, label=label)
    it.tags.extend(tags)
    it.facts.CopyFrom(common_pb2.PhotoFacts(**facts))  # type: ignore[arg-type]
    return it


def upsert(index: Running, *items: index_pb2.UpsertItem) -> list[index_pb2.UpsertResult]:
    return list(index.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=10).results)


def test_tags_add_remove_list_and_upsert_adds_tags(index: Running) -> None:
    stub = index.stub
    first = tagged("a", 1, label="cat", tags=("pets", " cat "), camera_make="Canon")
    first.file_mtime_ns = 1_700_000_000_987_654_321
    (a,) = upsert(index, first)
    b, c = upsert(index, tagged("b", 2, label="dog"), tagged("c", 3))
    (meta,) = stub.Get(index_pb2.GetRequest(ids=[a.id]), timeout=5).images
    assert (list(meta.tags), meta.label, meta.facts.camera_make, meta.file_mtime_ns) == (
        ["cat", "pets"], "cat", "Canon", 1_700_000_000_987_654_321)
    # The same picture again with new tags and a capture time it lacked: tags added, the time filled in.
    (again,) = upsert(index, tagged("a", 1, label="kitten", tags=("sofa",), taken_at=1_500_000_000,
                                    camera_make="Nikon"))
    assert (again.id, again.created) == (a.id, False)
    (meta,) = stub.Get(index_pb2.GetRequest(ids=[a.id]), timeout=5).images
    assert list(meta.tags) == ["cat", "kitten", "pets", "sofa"] and meta.label == "cat"
    assert (meta.facts.taken_at, meta.facts.camera_make) == (1_500_000_000, "Canon")  # known facts are kept
    out = stub.UpdateTags(index_pb2.UpdateTagsRequest(ids=[c.id, a.id, 10**9], add=["holiday"], remove=["cat"]),
                          timeout=5)
    assert list(out.updated) == sorted([a.id, c.id])
    counts = [(t.tag, t.count) for t in stub.ListTags(index_pb2.ListTagsRequest(), timeout=5).tags]
    assert counts == [("dog", 1), ("holiday", 2), ("kitten", 1), ("pets", 1), ("sofa", 1)]
    (meta,) = stub.Get(index_pb2.GetRequest(ids=[a.id]), timeout=5).images
    assert meta.label == "holiday"  # its label "cat" is no tag any more: the first tag stands in
    page = stub.ListImages(index_pb2.ListImagesRequest(limit=10), timeout=5).images
    assert {m.id: list(m.tags) for m in page} == {a.id: ["holiday", "kitten", "pets", "sofa"], b.id: ["dog"],
                                                  c.id: ["holiday"]}
    # 64 tags at most: an edit past it changes nothing, an upsert past it fails that item alone.
    many = [f"t{i:02d}" for i in range(61)]
    with pytest.raises(grpc.RpcError) as info:
        stub.UpdateTags(index_pb2.UpdateTagsRequest(ids=[b.id, a.id], add=many), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "64" in (info.value.details() or "")
    (meta,) = stub.Get(index_pb2.GetRequest(ids=[b.id]), timeout=5).images
    assert list(meta.tags) == ["dog"]  # one transaction: b was not changed either
    stub.UpdateTags(index_pb2.UpdateTagsRequest(ids=[b.id], add=many), timeout=5)
    over, ok = upsert(index, tagged("b", 2, tags=tuple(f"u{i}" for i in range(3))), tagged("d", 4, tags=("new",)))
    assert over.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "65 tags" in over.error.message
    assert ok.created and not ok.HasField("error")
    bad = upsert(index, tagged("e", 5, tags=("ok", "bad\ttag")), tagged("f", 6, latitude=91.0, longitude=0.0))
    assert [r.error.code for r in bad] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2
    assert "'bad\\ttag'" in bad[0].error.message and "latitude 91.0" in bad[1].error.message
