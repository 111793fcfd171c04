"""Tag counts kept by triggers (migration 13) against the real embedded Postgres: exact after every kind of write."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from index_service import catalog, migrations, tag_counts
from index_service.dialects import PgVector
from index_service.migrations import Context, migrate
from index_service.pool import Pool
from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, item, make_config, start_server, unit


def scanned(dsn: str, table: str) -> list[tuple[str, int]]:
    """What the counts must be: a fresh GROUP BY over the rows ("" for the untagged)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT tag, count(*) FROM {table}, unnest(CASE WHEN cardinality(tags) = 0 THEN ARRAY[''] "
                    'ELSE tags END) AS tag GROUP BY tag ORDER BY tag COLLATE "C"')
        return [(str(t), int(n)) for t, n in cur.fetchall()]


def listed(running: Running, collection: str = "") -> list[tuple[str, int]]:
    """ListLabels as (tag, count) pairs: "" first, then every tag."""
    labels = running.stub.ListLabels(index_pb2.ListLabelsRequest(collection=collection), timeout=10).labels
    return [(lb.label, lb.count) for lb in labels]


def tagged(key: str, tags: list[str], rng: np.random.Generator, dim: int = 4) -> index_pb2.UpsertItem:
    """An upsert item without a label and with `tags`."""
    it = item(unit(rng, dim), key, label="", model="m@1")
    it.tags.extend(tags)
    return it


def test_counts_follow_every_kind_of_write(tmp_path: Path, pg_dsn: str) -> None:
    rng = np.random.default_rng(13)
    running = start_server(make_config(tmp_path, pg_dsn, dim=4, bulk_min_rows=5))
    try:
        stub = running.stub
        # A bulk load (index deferred), then a normal upsert: both COPY their new rows.
        first = [tagged(f"a{i}", ["dog"] if i % 2 else ["dog", "beach"], rng) for i in range(6)]
        first.append(tagged("plain", [], rng))
        ids = [r.id for r in stub.Upsert(index_pb2.UpsertRequest(items=first, expected_rows=100), timeout=20).results]
        stub.Upsert(index_pb2.UpsertRequest(items=[tagged("b0", ["cat", "Ärger"], rng),
                                                   tagged("b1", [], rng)]), timeout=20)
        assert listed(running) == scanned(pg_dsn, "images") == [("", 2), ("beach", 3), ("cat", 1), ("dog", 6),
                                                                 ("Ärger", 1)]
        # Duplicates re-upserted with new tags (merge_existing's UPDATE), one untagged row gaining one.
        again = [tagged("a0", ["sea"], rng), tagged("plain", ["sea"], rng)]
        stub.Upsert(index_pb2.UpsertRequest(items=again), timeout=20)
        stub.UpdateTags(index_pb2.UpdateTagsRequest(ids=ids[:4], add=["dog", "new"], remove=["beach"]), timeout=10)
        stub.Delete(index_pb2.DeleteRequest(ids=[ids[1], ids[5]]), timeout=10)
        assert listed(running) == scanned(pg_dsn, "images") == [("", 1), ("beach", 1), ("cat", 1), ("dog", 4),
                                                                 ("new", 3), ("sea", 2), ("Ärger", 1)]
        tags = stub.ListTags(index_pb2.ListTagsRequest(), timeout=10).tags
        assert [(t.tag, t.count) for t in tags] == scanned(pg_dsn, "images")[1:]
        # A tag no image carries any more disappears; writes that leave tags alone add nothing.
        stub.UpdateTags(index_pb2.UpdateTagsRequest(ids=ids, remove=["new", "Ärger"]), timeout=10)
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("UPDATE images SET file_name = file_name || '.x'")
            cur.execute("SELECT count(*) FROM tag_counts WHERE tag = 'dog' AND collection = 'c1'")
            rows_of_dog = cur.fetchone()[0]
            cur.execute("UPDATE images SET file_name = file_name || '.y'")
            cur.execute("SELECT count(*) FROM tag_counts WHERE tag = 'dog' AND collection = 'c1'")
            assert cur.fetchone()[0] == rows_of_dog
        assert listed(running) == scanned(pg_dsn, "images")
        assert "new" not in dict(listed(running))
        # A folder sync's file removed: RemoveFiles deletes the image it stored.
        synced = tagged("synced", ["dog", "synced"], rng)
        synced.source, synced.record_file = "sync", True
        stub.Upsert(index_pb2.UpsertRequest(items=[synced]), timeout=20)
        assert dict(listed(running))["synced"] == 1
        gone = stub.RemoveFiles(index_pb2.RemoveFilesRequest(source="sync", paths=["synced.jpg"]), timeout=10)
        assert len(gone.deleted_ids) == 1
        assert listed(running) == scanned(pg_dsn, "images") and "synced" not in dict(listed(running))
    finally:
        running.stop()


def test_collections_count_apart_and_drop_forgets(tmp_path: Path, pg_dsn: str) -> None:
    rng = np.random.default_rng(14)
    running = start_server(make_config(tmp_path, pg_dsn, dim=4))
    try:
        stub = running.stub
        stub.CreateCollection(index_pb2.CreateCollectionRequest(name="other", model_id="m@1", dim=4), timeout=10)
        stub.Upsert(index_pb2.UpsertRequest(items=[tagged("x", ["dog"], rng)], collection="other"), timeout=20)
        stub.Upsert(index_pb2.UpsertRequest(items=[tagged("y", ["cat"], rng)]), timeout=20)
        assert listed(running, "other") == scanned(pg_dsn, "images_other") == [("dog", 1)]
        assert listed(running) == [("cat", 1)]
        stub.DropCollection(index_pb2.DropCollectionRequest(name="other"), timeout=10)
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT DISTINCT collection FROM tag_counts")
            assert cur.fetchall() == [("c1",)]
        # The name taken again starts from nothing.
        stub.CreateCollection(index_pb2.CreateCollectionRequest(name="other", model_id="m@1", dim=4), timeout=10)
        assert listed(running, "other") == []
    finally:
        running.stop()


def test_concurrent_upserts_of_the_same_tags_neither_deadlock_nor_miscount(tmp_path: Path, pg_dsn: str) -> None:
    running = start_server(make_config(tmp_path, pg_dsn, dim=4))
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def load(worker: int) -> None:
        rng = np.random.default_rng(worker)
        try:
            start.wait()
            for batch in range(8):
                # Every batch touches the popular tags and "" in a different order of rows; some rows repeat
                # across workers (a duplicate upserted at the same time with other tags).
                items = [tagged(f"w{worker}-{batch}-{i}", ["popular", f"t{i % 3}"] if i % 4 else [], rng)
                         for i in range(12)]
                items.append(tagged(f"shared-{batch}", ["shared", f"from{worker}"], rng))
                running.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=60)
                if batch % 3 == 0:
                    running.stub.ListTags(index_pb2.ListTagsRequest(), timeout=60)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    try:
        threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert not errors
        counted = dict(listed(running))
        assert counted["popular"] == 6 * 8 * 9 and counted[""] == 6 * 8 * 3 and counted["shared"] == 8
        assert listed(running) == scanned(pg_dsn, "images")
    finally:
        running.stop()


def test_copy_fires_the_insert_trigger_and_a_read_folds(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = psycopg2.connect(pg_dsn)
    migrate(conn, Context("pgvector", 4))
    with conn.cursor() as cur:
        for n in range(30):  # thirty COPY statements: thirty appended rows per tag
            rows = f"[1,0,0,0]\t{n:064x}\tm@1\t{{dog,n{n % 2}}}\n[0,1,0,0]\t{n + 100:064x}\tm@1\t{{}}\n"
            cur.copy_expert("COPY images (v, sha256, model_id, tags) FROM STDIN", io.StringIO(rows))
        conn.commit()
        cur.execute("SELECT count(*) FROM tag_counts")
        assert cur.fetchone()[0] == 30 * 3  # dog, n0 or n1, ""
        expected = [("", 30), ("dog", 30), ("n0", 15), ("n1", 15)]
        monkeypatch.setattr(tag_counts, "FOLD_SLACK", 5)
        assert tag_counts.counts(cur, "c1") == expected == scanned(pg_dsn, "images")
        conn.commit()
        cur.execute("SELECT tag, n FROM tag_counts ORDER BY tag")
        assert cur.fetchall() == expected  # folded: one row per tag
        assert tag_counts.counts(cur, "c1") == expected
        assert not tag_counts.fold(cur, "gone")  # no collection of that name: nothing to fold (a dropped one)
        conn.commit()
        # The background's fold: only collections whose rows have grown past the slack.
        for n in range(30, 50):
            cur.execute("INSERT INTO images (v, sha256, model_id, tags) VALUES ('[1,0,0,0]', %s, 'm@1', '{cat}')",
                        (f"{n:064x}",))
        conn.commit()
        pool = Pool(pg_dsn, 2, 5, lambda c: None)
        assert tag_counts.fold_grown(pool) == ["c1"]  # 5 tags in 24 rows: past 2 * 5 + 5
        assert tag_counts.fold_grown(pool) == []
        pool.clear()
        cur.execute("SELECT tag, n FROM tag_counts ORDER BY tag")
        assert cur.fetchall() == [("", 30), ("cat", 20), ("dog", 30), ("n0", 15), ("n1", 15)]
    conn.close()


def test_migration_13_counts_the_rows_of_tables_made_before_it(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", [step for step in migrations.MIGRATIONS if step[0] != 13])
        m.setattr(tag_counts, "install", lambda cur, name, table: None)
        conn = psycopg2.connect(pg_dsn)
        migrate(conn, Context("pgvector", 4))
        with conn.cursor() as cur:
            catalog.create(cur, PgVector(), "c2", "m@1", 4)
            for n, (table, tags) in enumerate([("images", "{cat}"), ("images", "{cat,dog}"), ("images", "{}"),
                                               ("images_c2", "{bird}")]):
                cur.execute(f"INSERT INTO {table} (v, sha256, model_id, tags) VALUES ('[1,0,0,0]', %s, 'm@1', %s)",
                            (f"{n:064x}", tags))
            cur.execute("SELECT to_regclass('tag_counts')")
            assert cur.fetchone()[0] is None
        conn.commit()
    migrate(conn, Context("pgvector", 4))
    with conn.cursor() as cur:
        assert tag_counts.counts(cur, "c1") == scanned(pg_dsn, "images") == [("", 1), ("cat", 2), ("dog", 1)]
        assert tag_counts.counts(cur, "c2") == [("bird", 1)]
        # The triggers are there too: later writes keep the counts.
        cur.execute("DELETE FROM images WHERE tags = '{cat}'")
        cur.execute("INSERT INTO images_c2 (v, sha256, model_id, tags) VALUES ('[1,0,0,0]', %s, 'm@1', '{bird}')",
                    (f"{99:064x}",))
        assert tag_counts.counts(cur, "c1") == [("", 1), ("cat", 1), ("dog", 1)]
        assert tag_counts.counts(cur, "c2") == [("bird", 2)]
    conn.close()
