"""Thumbnails in the media store beside their originals, on the real embedded Postgres: written by upserts,
read back, remade, moved out of the old column, and swept with their originals."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psycopg2
import pytest
from PIL import Image

from index_service import adopt_files, thumbnail_mover, thumbnails
from index_service.adopt_files import THUMBNAIL_SIZE
from index_service.domain import StorageFull
from index_service.thumbnail_mover import ThumbnailMover
from protos.semsearch.v1 import index_pb2
from tests.support import exif as E
from tests.support.index import Running, item, make_config, start_server, unit


def photo(seed: int, size: tuple[int, int] = (900, 600)) -> bytes:
    """A distinct JPEG per seed."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1] // 30, size[0] // 30, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).resize(size).save(out, "JPEG")
    return out.getvalue()


def with_original(it: index_pb2.UpsertItem, original: bytes, thumb: bytes) -> index_pb2.UpsertItem:
    it.original, it.sha256, it.thumbnail = original, hashlib.sha256(original).hexdigest(), thumb
    return it


def upsert(running: Running, items: list[index_pb2.UpsertItem], **kw: object) -> list[int]:
    results = running.stub.Upsert(index_pb2.UpsertRequest(items=items, **kw), timeout=30).results  # type: ignore[arg-type]
    assert all(not r.HasField("error") for r in results), results
    return [r.id for r in results]


def thumb_of(running: Running, image_id: int, collection: str = "") -> tuple[str, bytes]:
    request = index_pb2.GetImageRequest(id=image_id, variant=index_pb2.IMAGE_VARIANT_THUMBNAIL, collection=collection)
    chunks = list(running.stub.GetImage(request, timeout=10))
    return chunks[0].content_type, b"".join(c.data for c in chunks)


def column(running: Running, image_id: int) -> bytes | None:
    """The row's old thumbnail column, read straight from the table."""
    table = running.deps.repo.collection("", 5).table
    with psycopg2.connect(running.config.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT thumbnail FROM {table} WHERE id = %s", (image_id,))
        value = cur.fetchone()[0]  # type: ignore[index]
    conn.close()
    return None if value is None else bytes(value)


def set_column(running: Running, image_id: int, data: bytes | None) -> None:
    """Make a row look as one from before the move: its thumbnail in the column."""
    table = running.deps.repo.collection("", 5).table
    with psycopg2.connect(running.config.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE {table} SET thumbnail = %s WHERE id = %s", (data, image_id))
    conn.close()


def thumb_file(running: Running, sha256: str) -> Path:
    return thumbnails.path(running.deps.media, sha256)


@pytest.fixture
def still(tmp_path: Path, pg_dsn: str) -> Iterator[Running]:
    """A server whose mover is off, so a test decides when it runs."""
    running = start_server(make_config(tmp_path / "data", pg_dsn, move_thumbnails=False))
    yield running
    running.stop()


def test_an_upsert_writes_the_file_not_the_column_and_every_read_returns_it(still: Running) -> None:
    rng = np.random.default_rng(1)
    items = [item(unit(rng), f"k{i}", thumb=b"\x89PNG\r\n\x1a\n" + bytes([i]) * 300) for i in range(3)]
    ids = upsert(still, items, expected_rows=50_000)  # an announced bulk load: the same COPY, the same files
    for image_id, it in zip(ids, items, strict=True):
        assert thumb_file(still, it.sha256).read_bytes() == it.thumbnail
        assert column(still, image_id) is None
        assert thumb_of(still, image_id) == ("image/png", it.thumbnail)
    page = still.stub.ListImages(index_pb2.ListImagesRequest(limit=10, include_bytes=True), timeout=5)
    by_id = dict(zip(ids, items, strict=True))
    assert list(page.thumbnails) == [by_id[i].thumbnail for i in sorted(ids)]
    bare = still.stub.ListImages(index_pb2.ListImagesRequest(limit=10), timeout=5)
    assert [m.id for m in bare.images] == sorted(ids) and not bare.thumbnails
    # The same picture in another collection shares the file: the first one kept stays.
    still.stub.CreateCollection(index_pb2.CreateCollectionRequest(name="c2", model_id="m@2", dim=8), timeout=10)
    again = item(unit(rng, 8), "k0", model="m@2", thumb=b"\xff\xd8\xffanother")
    (other,) = upsert(still, [again], collection="c2")
    assert thumb_of(still, other, "c2") == ("image/png", items[0].thumbnail)


def test_a_page_with_bytes_stops_at_half_the_message_limit_and_reads_no_further(
        tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_server(make_config(tmp_path / "data", pg_dsn, move_thumbnails=False, max_message_mb=4))
    try:
        rng = np.random.default_rng(5)
        big = [with_original(item(unit(rng), f"b{i}"), os.urandom(700_000), b"\xff\xd8\xffbig" + bytes([i]))
               for i in range(5)]
        ids = [upsert(running, [it])[0] for it in big]
        picked: list[str] = []
        pick = running.deps.repo.thumbs.pick
        monkeypatch.setattr(running.deps.repo.thumbs, "pick",
                            lambda sha256, col, **kw: picked.append(sha256) or pick(sha256, col, **kw))
        page = running.stub.ListImages(index_pb2.ListImagesRequest(limit=5, include_bytes=True), timeout=10)
        # Half of 4 MB holds two 700 KB originals; the third is where the page stops, and the last two
        # are never read.
        assert [i.id for i in page.images] == ids[:2] and (page.last_id, page.left_out) == (ids[1], 0)
        assert list(page.originals) == [it.original for it in big[:2]]
        assert list(page.thumbnails) == [it.thumbnail for it in big[:2]]
        assert picked == [it.sha256 for it in big[:3]]
        rest = running.stub.ListImages(index_pb2.ListImagesRequest(after_id=ids[1], limit=5, include_bytes=True),
                                       timeout=10)
        assert [i.id for i in rest.images] == ids[2:4]
    finally:
        running.stop()


def test_an_old_row_is_served_from_its_column_then_moved(still: Running) -> None:
    rng = np.random.default_rng(2)
    items = [item(unit(rng), f"o{i}", thumb=b"\xff\xd8\xffnew" + bytes([i])) for i in range(4)]
    ids = upsert(still, items)
    old = [b"\xff\xd8\xffold-" + bytes([i]) * 2000 for i in range(4)]
    for image_id, it, data in zip(ids, items, old, strict=True):
        thumb_file(still, it.sha256).unlink()
        set_column(still, image_id, data)
    set_column(still, ids[2], b"")  # upserted once without a thumbnail: nothing to keep
    thumb_file(still, items[3].sha256).write_bytes(b"\xff\xd8\xffkept")  # a file already there stays
    assert thumb_of(still, ids[0]) == ("image/jpeg", old[0])
    page = still.stub.ListImages(index_pb2.ListImagesRequest(limit=4, include_bytes=True), timeout=5)
    by_id = dict(zip(ids, [old[0], old[1], b"", b"\xff\xd8\xffkept"], strict=True))
    assert list(page.thumbnails) == [by_id[i] for i in sorted(ids)]

    mover = ThumbnailMover(still.config, still.deps.repo, still.deps.media)
    assert mover.run() == 4
    assert [column(still, i) for i in ids] == [None] * 4
    assert [thumb_file(still, it.sha256).read_bytes() for it in items[:2]] == old[:2]
    assert not thumb_file(still, items[2].sha256).exists()
    assert thumb_file(still, items[3].sha256).read_bytes() == b"\xff\xd8\xffkept"
    assert thumb_of(still, ids[1]) == ("image/jpeg", old[1])
    assert ThumbnailMover(still.config, still.deps.repo, still.deps.media).run() == 0  # idempotent


def test_the_mover_never_clears_a_column_whose_file_was_not_written(still: Running,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (image_id,) = upsert(still, [item(unit(np.random.default_rng(3)), "f")])
    sha = still.stub.Get(index_pb2.GetRequest(ids=[image_id]), timeout=5).images[0].sha256
    thumb_file(still, sha).unlink()
    set_column(still, image_id, b"\xff\xd8\xffonly-here")

    def full(files: list[tuple[Path, bytes]]) -> None:
        raise StorageFull("the media store is full: No space left on device")

    monkeypatch.setattr(still.deps.media, "put_paths", full)
    with pytest.raises(StorageFull):
        ThumbnailMover(still.config, still.deps.repo, still.deps.media).run()
    assert column(still, image_id) == b"\xff\xd8\xffonly-here" and not thumb_file(still, sha).exists()


def test_the_service_starts_the_mover(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(thumbnail_mover, "BATCH_ROWS", 2)  # several batches
    running = start_server(make_config(tmp_path / "data", pg_dsn))
    try:
        assert running.deps.mover is not None and running.deps.mover.done.wait(30)
        ids = upsert(running, [item(unit(np.random.default_rng(4)), f"s{i}") for i in range(5)])
        for i in ids:
            set_column(running, i, b"\xff\xd8\xffold")
    finally:
        running.stop()
    again = start_server(make_config(tmp_path / "data", pg_dsn))
    try:
        assert again.deps.mover is not None and again.deps.mover.done.wait(30)
        assert again.deps.mover.moved == 5 and [column(again, i) for i in ids] == [None] * 5
    finally:
        again.stop()


def test_a_lost_thumbnail_is_made_again_from_the_original(still: Running) -> None:
    rng = np.random.default_rng(5)
    lost = with_original(item(unit(rng), "lost"), photo(1), b"\xff\xd8\xffgiven")
    none = with_original(item(unit(rng), "none"), photo(2, (300, 800)), b"")
    odd = with_original(item(unit(rng), "odd"), b"not a picture Pillow knows", b"")
    gone = item(unit(rng), "gone", thumb=b"")
    ids = upsert(still, [lost, none, odd, gone])
    thumb_file(still, lost.sha256).unlink()
    for image_id, it in zip(ids[:2], (lost, none), strict=True):
        kind, data = thumb_of(still, image_id)
        made = Image.open(io.BytesIO(data))
        assert kind == "image/jpeg" and max(made.size) == THUMBNAIL_SIZE
        assert thumb_file(still, it.sha256).read_bytes() == data  # kept for the next read
    assert thumb_of(still, ids[2])[1] == odd.original  # shown as it is, as display renditions do
    still.deps.media.path_for(gone.sha256).unlink()
    with pytest.raises(grpc.RpcError) as info:
        thumb_of(still, ids[3])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    page = still.stub.ListImages(index_pb2.ListImagesRequest(limit=10, include_bytes=True), timeout=5)
    listed = dict(zip([m.id for m in page.images], page.thumbnails, strict=True))
    assert listed[ids[2]] == listed[ids[3]] == b""  # nothing to make a thumbnail of: empty, as before


def test_a_delete_and_the_sweep_take_the_thumbnail_with_its_original(still: Running) -> None:
    rng = np.random.default_rng(6)
    keep, drop = item(unit(rng), "keep"), item(unit(rng), "drop")
    ids = upsert(still, [keep, drop])
    media = still.deps.media
    still.stub.Delete(index_pb2.DeleteRequest(ids=[ids[1]]), timeout=10)
    assert not media.path_for(drop.sha256).exists() and not thumb_file(still, drop.sha256).exists()
    orphan = hashlib.sha256(b"crash leftover").hexdigest()
    media.put_many([(orphan, b"crash leftover")])
    media.put_rendition(thumb_file(still, orphan), b"\xff\xd8\xffleft")
    lone = hashlib.sha256(b"a thumbnail alone").hexdigest()
    media.put_paths([(thumb_file(still, lone), b"\xff\xd8\xffalone")])
    old = time.time() - 7200
    for path in (media.path_for(orphan), thumb_file(still, orphan), thumb_file(still, lone),
                 media.path_for(keep.sha256), thumb_file(still, keep.sha256)):
        os.utime(path, (old, old))
    assert media.sweep(still.deps.repo.with_orphans, grace_s=60) == 2  # one per orphaned sha256
    assert not media.path_for(orphan).exists() and not thumb_file(still, orphan).exists()
    assert not thumb_file(still, lone).exists()
    assert media.path_for(keep.sha256).exists() and thumb_file(still, keep.sha256).exists()


@pytest.mark.parametrize(("orientation", "size"), [(E.short(E.ORIENTATION, 6), (48, 64)),  # turned upright
                                                   (E.short(E.ORIENTATION, 9), (64, 48)),  # a lie: as stored
                                                   (E.ascii(E.ORIENTATION, "6"), (64, 48))])
def test_a_remade_thumbnail_is_turned_as_an_adopted_one_is(orientation: E.Entry, size: tuple[int, int]) -> None:
    original = E.photo(E.block(ifd0=(orientation,)), width=64, height=48)
    with Image.open(io.BytesIO(thumbnails.make(original))) as remade:
        assert remade.size == size
    assert thumbnails.make(original) == adopt_files.make_whole(original, 0).thumbnail
