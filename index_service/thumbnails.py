"""Thumbnails live in the media store beside their originals, as <sha256>.thumb.

Until issue 14 every row held its thumbnail (~15 KB JPEG) in the `thumbnail bytea` column: at 300,000
rows 5.7 GB of a 6.7 GB database, so every dump and restore copied them again (numbers in README.md,
"Where thumbnails live"; bench/thumbnails.py measures both placements). Now an upsert writes the file
in the same durable batch as the original, before its row commits, and new rows hold NULL in the
column. A read takes the file; else the column's bytes (a row from before the move); else it remakes
the thumbnail from the original, like the loader's default one, and keeps it. The mover
(thumbnail_mover.py) empties the column of older rows in the background.

One file per original: the same picture in two collections shares it, and the first one kept stays.
A delete and the orphan sweep remove it with its original (media.RENDITION_SUFFIXES).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from index_service.adopt_files import THUMBNAIL_SIZE, make_thumbnail, upright
from index_service.media import MediaStore
from semsearch_common import exif

log = logging.getLogger(__name__)

SUFFIX = ".thumb"
STRIPES = 64


def path(media: MediaStore, sha256: str) -> Path:
    """Where the thumbnail of `sha256`'s original lives."""
    return media.rendition_path(sha256, SUFFIX)


def missing_files(media: MediaStore, images: Iterable[tuple[str, bytes, bytes]]) -> list[tuple[Path, bytes]]:
    """The files to write before rows name them, from (sha256, original, thumbnail): those not stored yet.

    An original another collection already holds (a re-embed) is durable and not written again; an image
    without a thumbnail gets one made from its original when first asked for.
    """
    out: dict[Path, bytes] = {}
    for sha256, original, thumbnail in images:
        for target, data in ((media.path_for(sha256), original), (path(media, sha256), thumbnail)):
            if data and target not in out and not target.exists():
                out[target] = data
    return list(out.items())


def make(original: bytes) -> bytes:
    """The loader's default thumbnail of an original (upright, THUMBNAIL_SIZE long side, JPEG); raises what
    Pillow raises for bytes it cannot decode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the embedder bounded it on the way in
        with Image.open(io.BytesIO(original)) as image:
            image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))  # JPEG: decode at 1/2..1/8 scale, enough here
            image.load()
            # Turned as adopted and loaded pictures are, by the same lenient EXIF reader (a lying tag is ignored).
            return make_thumbnail(upright(image, exif.read(image).orientation))


class Thumbnails:
    """Reads thumbnails: the file, else the row's old column bytes, else made again from the original."""

    def __init__(self, media: MediaStore) -> None:
        self.media = media
        # Two first requests for one image make it once; different images rarely share a stripe.
        self._locks = [threading.Lock() for _ in range(STRIPES)]

    def pick(self, sha256: str | None, column: bytes | None, or_original: bool = False) -> bytes | None:
        """The thumbnail of a row with this sha256 and column value; None when there is none to give.

        `or_original`: an original Pillow cannot decode is given as it is (the viewer may still show it).
        """
        if not sha256:  # a prototype row not made whole yet: only its column can hold one
            return bytes(column) if column else None
        kept = self._file(sha256)
        if kept is not None:
            return kept
        if column:  # a row from before the move; the mover writes its file
            return bytes(column)
        return self._remake(sha256, or_original)

    def _file(self, sha256: str) -> bytes | None:
        try:
            return path(self.media, sha256).read_bytes()
        except FileNotFoundError:
            return None

    def _remake(self, sha256: str, or_original: bool) -> bytes | None:
        with self._locks[int(sha256[:8], 16) % STRIPES]:
            kept = self._file(sha256)  # the other first request (or the mover) wrote it while we waited
            if kept is not None:
                return kept
            try:
                original = b"".join(self.media.open(sha256))
            except FileNotFoundError:
                log.error("thumbnail of %s: neither it nor its original is in the media store", sha256)
                return None
            try:
                data = make(original)
            except Exception as err:  # not an image Pillow decodes (another client's bytes)
                log.warning("no thumbnail of %s: %s", sha256, err)
                return original if or_original else None
            try:
                self.media.put_rendition(path(self.media, sha256), data)
            except OSError as err:  # a full or read-only store: the caller still gets its thumbnail
                log.warning("thumbnail of %s not kept: %s", sha256, err)
            return data
