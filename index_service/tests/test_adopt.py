"""The prototype's adopted rows made whole from their files, on the real embedded Postgres."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import grpc
import numpy as np
import psycopg2
import pytest
from PIL import Image

from index_service import adopt, adopt_files, thumbnails
from index_service.config import Config, ConfigError
from protos.semsearch.v1 import index_pb2
from tests.support import exif as written
from tests.support.index import Running, item, make_config, start_server, unit


def photo(seed: int, size: tuple[int, int] = (600, 400), fmt: str = "JPEG") -> bytes:
    """A distinct picture per seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize(size).save(buffer, fmt)
    return buffer.getvalue()


def prototype(dsn: str, refs: list[str]) -> list[np.ndarray]:
    """The original prototype's table, one row per path, ids 1..n; returns the vectors."""
    rng = np.random.default_rng(7)
    vecs = [unit(rng) for _ in refs]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE image_table (v REAL[], location VARCHAR, id SERIAL PRIMARY KEY)")
        for v, ref in zip(vecs, refs, strict=True):
            cur.execute("INSERT INTO image_table (v, location) VALUES (%s, %s)", (v.tolist(), ref))
    return vecs


def fetch(running: Running, image_id: int, variant: int) -> bytes:
    request = index_pb2.GetImageRequest(id=image_id, variant=variant)  # type: ignore[arg-type]
    return b"".join(chunk.data for chunk in running.stub.GetImage(request, timeout=10))


def meta(running: Running, image_id: int) -> index_pb2.ImageMeta:
    (found,) = running.stub.Get(index_pb2.GetRequest(ids=[image_id]), timeout=5).images
    return found


def test_adopted_rows_get_their_files_thumbnails_and_hashes(tmp_path: Path, pg_dsn: str,
                                                            caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adopt, "BATCH_BYTES", 1)  # every file its own transaction: duplicates span them
    folder = tmp_path / "photos"
    (folder / "cats").mkdir(parents=True)
    files = {"cats/a.jpg": photo(1), "cats/b.png": photo(2, (300, 500), "PNG"),
             "rotated.jpg": written.photo(written.full(orientation=6), 640, 480),
             "copy-of-a.jpg": photo(1), "notes.txt": b"not a picture at all"}
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    refs = [str(folder / rel) for rel in files] + [str(folder / "gone.jpg")]
    prototype(pg_dsn, refs)  # ids: 1 a, 2 b, 3 rotated, 4 copy of a, 5 text, 6 missing
    caplog.set_level(logging.INFO, logger="index_service.adopt")
    running = start_server(make_config(tmp_path / "data", pg_dsn))
    try:
        adopter = running.deps.adopter
        assert adopter is not None and adopter.done.wait(60)
        assert dict(adopter.report.counts) == {"whole": 3, "duplicate": 1, "missing": 1, "unreadable": 1}
        assert set(adopter.report.problems) == {5, 6}
        for row_id, rel in ((1, "cats/a.jpg"), (2, "cats/b.png"), (3, "rotated.jpg")):
            data = files[rel]
            m = meta(running, row_id)
            assert (m.sha256, m.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
            assert fetch(running, row_id, index_pb2.IMAGE_VARIANT_ORIGINAL) == data
            kept = thumbnails.path(running.deps.media, m.sha256).read_bytes()  # beside the original, not in the row
            assert fetch(running, row_id, index_pb2.IMAGE_VARIANT_THUMBNAIL) == kept
            thumb = Image.open(io.BytesIO(kept))
            assert thumb.format == "JPEG" and max(thumb.size) == adopt_files.THUMBNAIL_SIZE
            assert thumb.size[0] / thumb.size[1] == pytest.approx(m.width / m.height, abs=0.01)
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {running.deps.repo.collection('', 5).table} WHERE thumbnail IS NOT NULL")
            assert cur.fetchone() == (0,)
        conn.close()
        assert (meta(running, 2).content_type, meta(running, 2).width, meta(running, 2).height) == (
            "image/png", 300, 500)
        assert (meta(running, 3).width, meta(running, 3).height) == (480, 640)  # after EXIF orientation 6
        # The second copy of a.jpg is gone; the failures keep their rows (and still answer NOT_FOUND).
        assert [m.id for m in running.stub.Get(index_pb2.GetRequest(ids=[1, 4, 5, 6]), timeout=5).images] == [1, 5, 6]
        for row_id in (5, 6):
            with pytest.raises(grpc.RpcError) as info:
                fetch(running, row_id, index_pb2.IMAGE_VARIANT_ORIGINAL)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # Loading the folder again adds nothing: every picture's hash is there, and an upsert finds its row.
        shas = [hashlib.sha256(d).hexdigest() for rel, d in files.items() if rel != "notes.txt"]
        assert set(running.stub.Exists(index_pb2.ExistsRequest(sha256=shas), timeout=5).present) == set(shas)
        again = item(unit(np.random.default_rng(1)), "again", model="unknown")
        again.sha256, again.original = shas[0], files["cats/a.jpg"]
        result = running.stub.Upsert(index_pb2.UpsertRequest(items=[again]), timeout=10).results[0]
        assert (result.created, result.id) == (False, 1)
        assert running.stub.Stats(index_pb2.StatsRequest(), timeout=5).count == 5
        # The tag counts follow the duplicate's delete and the upsert's merged tag (migration 13's triggers).
        labels = running.stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=5).labels
        assert [(lb.label, lb.count) for lb in labels] == [("", 4), ("cat", 1)]
        assert "file " + str(folder / "gone.jpg") + " is missing" in caplog.text
        assert "1 missing files, 1 unreadable" in caplog.text
    finally:
        running.stop()


def test_a_later_pass_drops_a_row_whose_picture_is_stored_and_fills_facts(tmp_path: Path, pg_dsn: str) -> None:
    (tmp_path / "p").mkdir()
    stored, exif_photo = tmp_path / "p" / "stored.jpg", tmp_path / "p" / "exif.jpg"
    stored.write_bytes(photo(3))
    exif_photo.write_bytes(written.photo(written.full(), 64, 48))
    prototype(pg_dsn, [str(stored)])
    running = start_server(make_config(tmp_path / "data", pg_dsn))
    try:
        adopter = running.deps.adopter
        assert adopter is not None and adopter.done.wait(60)
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            # The photo-facts columns as migration 6 (another branch) adds them; a no-op once it has.
            cur.execute("ALTER TABLE images ADD COLUMN IF NOT EXISTS taken_at bigint, "
                        "ADD COLUMN IF NOT EXISTS taken_offset_minutes smallint, "
                        "ADD COLUMN IF NOT EXISTS camera_make text NOT NULL DEFAULT '', "
                        "ADD COLUMN IF NOT EXISTS camera_model text NOT NULL DEFAULT '', "
                        "ADD COLUMN IF NOT EXISTS latitude double precision, "
                        "ADD COLUMN IF NOT EXISTS longitude double precision, "
                        "ADD COLUMN IF NOT EXISTS file_mtime_ns bigint NOT NULL DEFAULT 0")
            cur.execute("INSERT INTO images (v, original_ref, model_id) VALUES (%s, %s, 'unknown'), "
                        "(%s, %s, 'unknown')", (unit(np.random.default_rng(2)).tolist(), str(stored),
                                                unit(np.random.default_rng(3)).tolist(), str(exif_photo)))
        adopter.report.counts.clear()
        adopter.run()
        assert dict(adopter.report.counts) == {"duplicate": 1, "whole": 1}
        assert running.stub.Stats(index_pb2.StatsRequest(), timeout=5).count == 2
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT taken_at, taken_offset_minutes, camera_make, camera_model, "
                        "round(latitude::numeric, 4)::float8, file_mtime_ns FROM images WHERE original_ref = %s",
                        (str(exif_photo),))
            row = cur.fetchone()
        assert row is not None and row[:5] == (written.FULL_TAKEN_AT, 120, "Canon", "Canon EOS R5", 48.8582)
        assert row[5] == exif_photo.stat().st_mtime_ns
    finally:
        running.stop()


def test_paths_resolve_under_the_prototype_root_without_climbing_out(tmp_path: Path) -> None:
    (tmp_path / "caltech" / "001.ak47").mkdir(parents=True)
    target = tmp_path / "caltech" / "001.ak47" / "001_0001.jpg"
    target.write_bytes(photo(4))
    assert adopt_files.locate("/home/proto/caltech/001.ak47/001_0001.jpg", tmp_path) == target
    assert adopt_files.locate("C:\\data\\caltech\\001.ak47\\001_0001.jpg", tmp_path) == target
    with pytest.raises(adopt_files.Unreadable):
        adopt_files.locate("/x/../../etc/passwd", tmp_path)
    with pytest.raises(adopt_files.Missing):
        adopt_files.locate("/home/proto/caltech/001.ak47/nope.jpg", tmp_path)
    with pytest.raises(adopt_files.Unreadable):
        adopt_files.locate("relative/001.jpg", None)


def test_only_regular_files_within_the_limit_are_read(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(photo(5))
    with pytest.raises(adopt_files.Unreadable, match="over the limit"):
        adopt_files.read(big, 100)
    with pytest.raises(adopt_files.Unreadable, match="regular"):
        adopt_files.read(tmp_path, 10**6)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(adopt_files.Unreadable, match="regular"):
        adopt_files.read(fifo, 10**6)  # refused before opening, which would block
    with pytest.raises(adopt_files.Unreadable, match="not an image"):
        adopt_files.make_whole(b"%PDF-1.4 hello", 0)
    with pytest.raises(adopt_files.Unreadable, match="corrupt"):
        adopt_files.make_whole(photo(6)[:300], 0)


def test_the_prototype_root_and_batch_come_from_the_environment(tmp_path: Path) -> None:
    config = Config.from_env({"INDEX_PROTOTYPE_ROOT": str(tmp_path), "INDEX_ADOPT_BATCH": "5"})
    assert (config.prototype_root, config.adopt_batch) == (tmp_path.resolve(), 5)
    assert Config.from_env({}).prototype_root is None
    with pytest.raises(ConfigError, match="INDEX_ADOPT_BATCH"):
        Config.from_env({"INDEX_ADOPT_BATCH": "0"})
