"""Display renditions: how they are made, kept once, served, and removed with their original."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index_service import renditions
from index_service.media import MediaStore
from index_service.renditions import DISPLAY_SIDE, SUFFIX, Renditions, make_display
from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, item, unit
from tests.support.photos import photo, photo_jpeg

# 2000 x 1500 stored, EXIF orientation 6: a portrait photo from a phone held upright.
TURNED = photo_jpeg(2000, 1500, orientation=6, seed=1)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_a_large_turned_jpeg_becomes_an_upright_display_jpeg() -> None:
    out = decoded(make_display(TURNED) or b"")
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (1200, 1600))
    assert out.getexif().get(0x0112, 1) == 1  # upright pixels: nothing left for the browser to turn
    # The stored picture's top-left corner is the upright picture's top-right one.
    stored = decoded(TURNED).resize((1600, 1200))
    corner = [abs(a - b) for a, b in zip(stored.getpixel((20, 20)), out.getpixel((1179, 20)), strict=True)]
    assert max(corner) < 40


def test_a_small_browser_image_is_fit_to_show_as_it_is() -> None:
    assert make_display(encoded(photo(300, 200), "PNG")) is None
    assert make_display(photo_jpeg(1600, 900)) is None


def test_a_small_image_browsers_cannot_show_becomes_a_jpeg_of_its_size() -> None:
    out = decoded(make_display(encoded(photo(300, 200), "TIFF")) or b"")
    assert (out.format, out.size) == ("JPEG", (300, 200))


def test_transparency_is_laid_on_white() -> None:
    clear = Image.new("RGBA", (3200, 1000), (255, 0, 0, 0))
    out = decoded(make_display(encoded(clear, "PNG")) or b"")
    assert out.size == (DISPLAY_SIDE, 500) and out.getpixel((10, 10)) == (255, 255, 255)


def test_bytes_that_are_no_image_raise() -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever Pillow raises; Renditions serves the bytes as is
        make_display(b"<html>not an image</html>")


def stored(media: MediaStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    media.put(sha, data)
    return sha


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []
    real: Callable[[bytes], bytes | None] = renditions.make_display

    def make(original: bytes, side: int = DISPLAY_SIDE) -> bytes | None:
        made.append(len(original))
        time.sleep(0.2)  # long enough for every racing request to arrive
        return real(original)

    monkeypatch.setattr(renditions, "make_display", make)
    return made


def read(stream: tuple[str, int, object]) -> tuple[str, bytes]:
    content_type, size, chunks = stream
    data = b"".join(chunks)  # type: ignore[call-overload]
    assert len(data) == size
    return content_type, data


def test_it_is_made_once_kept_and_then_read_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    media = MediaStore(tmp_path)
    sha = stored(media, TURNED)
    made = counting(monkeypatch)
    shows = Renditions(media)
    results: list[tuple[str, bytes]] = []
    start = threading.Barrier(6)

    def first_request() -> None:
        start.wait()
        results.append(read(shows.display(sha, "image/jpeg", 2000, 1500)))

    threads = [threading.Thread(target=first_request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1, "six simultaneous first requests make it once"
    assert len({data for _, data in results}) == 1 and results[0][0] == "image/jpeg"
    path = media.rendition_path(sha, SUFFIX)
    assert path.read_bytes() == results[0][1]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert read(shows.display(sha, "image/jpeg", 2000, 1500)) == results[0]
    assert len(made) == 1, "later requests read the kept file"


def test_a_small_original_is_served_as_is_and_nothing_is_kept(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    media = MediaStore(tmp_path)
    small = encoded(photo(300, 200), "PNG")
    sha = stored(media, small)
    made = counting(monkeypatch)
    assert read(Renditions(media).display(sha, "image/png", 300, 200)) == ("image/png", small)
    assert made == [] and not media.rendition_path(sha, SUFFIX).exists()
    # Unknown size in the row: the header decides, and the original is still served as is.
    assert read(Renditions(media).display(sha, "image/png", 0, 0)) == ("image/png", small)
    assert not media.rendition_path(sha, SUFFIX).exists()


def test_bytes_that_are_no_image_are_served_as_they_are(tmp_path: Path) -> None:
    media = MediaStore(tmp_path)
    sha = stored(media, b"opaque bytes of another client")
    assert read(Renditions(media).display(sha, "application/octet-stream", 0, 0)) == (
        "application/octet-stream", b"opaque bytes of another client")


def test_a_missing_original_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Renditions(MediaStore(tmp_path)).display("ab" * 32, "image/jpeg", 4000, 3000)


def test_the_sweep_removes_renditions_without_a_row_and_keeps_the_rest(tmp_path: Path) -> None:
    media = MediaStore(tmp_path)
    kept, gone = stored(media, TURNED), stored(media, photo_jpeg(1800, 1000, seed=2))
    shows = Renditions(media)
    for sha in (kept, gone):
        read(shows.display(sha, "image/jpeg", 2000, 2000))
    media.delete(gone)  # the row's delete: its original and rendition go together
    assert not media.rendition_path(gone, SUFFIX).exists()
    orphan = "cd" * 32  # a rendition written after its row and original were deleted (a race)
    media.rendition_path(orphan, SUFFIX).parent.mkdir(parents=True, exist_ok=True)
    media.rendition_path(orphan, SUFFIX).write_bytes(b"late")
    old = time.time() - 7200
    for path in (media.path_for(kept), media.rendition_path(kept, SUFFIX), media.rendition_path(orphan, SUFFIX)):
        os.utime(path, (old, old))

    def with_orphans(shas: list[str], remove: Callable[[list[str]], None]) -> None:
        remove([s for s in shas if s != kept])

    assert media.sweep(with_orphans, grace_s=3600) == 1
    assert not media.rendition_path(orphan, SUFFIX).exists()
    assert media.exists(kept) and media.rendition_path(kept, SUFFIX).exists()


def display(index: Running, image_id: int) -> tuple[index_pb2.ImageChunk, bytes]:
    chunks = list(index.stub.GetImage(index_pb2.GetImageRequest(
        id=image_id, variant=index_pb2.IMAGE_VARIANT_DISPLAY), timeout=60))
    return chunks[0], b"".join(c.data for c in chunks)


def test_the_index_serves_keeps_and_deletes_the_display_rendition(index: Running) -> None:
    photo_item = item(unit(np.random.default_rng(3)), "turned")
    photo_item.original = TURNED
    photo_item.sha256 = hashlib.sha256(TURNED).hexdigest()
    photo_item.width, photo_item.height = 1500, 2000
    image_id = index.stub.Upsert(index_pb2.UpsertRequest(items=[photo_item]), timeout=30).results[0].id
    first, data = display(index, image_id)
    assert (first.content_type, first.total_size, first.sha256) == ("image/jpeg", len(data), photo_item.sha256)
    assert decoded(data).size == (1200, 1600) and len(data) < len(TURNED) / 2
    path = index.deps.media.rendition_path(photo_item.sha256, SUFFIX)
    made_at = path.stat().st_mtime_ns
    assert display(index, image_id)[1] == data and path.stat().st_mtime_ns == made_at, "kept, not made again"
    original = b"".join(c.data for c in index.stub.GetImage(index_pb2.GetImageRequest(id=image_id), timeout=30))
    assert original == TURNED
    index.stub.Delete(index_pb2.DeleteRequest(ids=[image_id]), timeout=30)
    assert not path.exists() and not index.deps.media.exists(photo_item.sha256)
