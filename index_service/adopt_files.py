"""The file behind an adopted prototype row: found safely, read within a bound, and made into what a row needs.

The prototype kept only a path (`location`, now `original_ref`). From the file at that path come the
sha256, the content type, the size after EXIF orientation, a thumbnail like the embedder's, and the
photo facts (semsearch_common.exif, the embedder's reader). No grpc and no SQL here.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from semsearch_common import exif, sniff

# The loader's default thumbnail (its --thumbnail-size) at the embedder's JPEG quality
# (embedder_service.preprocess.THUMBNAIL_QUALITY): adopted rows look like loaded ones.
THUMBNAIL_SIZE = 256
THUMBNAIL_QUALITY = 85
MAX_PIXELS = 40_000_000  # the embedder's default EMBEDDER_MAX_PIXELS: the same images are refused
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


class Missing(Exception):
    """No file at the row's path (under the prototype root, when one is set)."""


class Unreadable(Exception):
    """A file is there but cannot be adopted: not a regular file, too large, not an image, corrupt."""


@dataclass(frozen=True)
class Whole:
    """What an adopted row lacks, computed from its file."""

    sha256: str
    data: bytes
    content_type: str
    width: int  # after EXIF orientation
    height: int
    thumbnail: bytes
    facts: exif.Facts
    mtime_ns: int


def locate(ref: str, root: Path | None) -> Path:
    """The file a row's path names: the path itself, or under `root` the path and then its shorter tails.

    The prototype stored absolute paths of the machine that loaded it; the same folder mounted elsewhere is
    found under INDEX_PROTOTYPE_ROOT as loader's re-embed --prototype-root finds it. A tail never climbs
    out of the root (no `..`).
    """
    if "\x00" in ref or not ref.strip():
        raise Unreadable("the path is empty or holds a NUL")
    if root is None:
        path = Path(ref)
        if not path.is_absolute():
            raise Unreadable("a relative path (set INDEX_PROTOTYPE_ROOT to say where it resolves)")
        return path
    parts = [p for p in PurePosixPath(ref.replace("\\", "/")).parts if p not in ("/", "")]
    if ".." in parts:
        raise Unreadable("the path climbs with '..'")
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.exists():
            return candidate
    raise Missing(f"not found under {root}")


def read(path: Path, max_bytes: int) -> tuple[bytes, int]:
    """The bytes of a regular file of at most `max_bytes`, and its mtime in ns."""
    try:
        before = os.stat(path)  # before opening: opening a FIFO would block until a writer comes
    except FileNotFoundError:
        raise Missing("no such file") from None
    except OSError as err:
        raise Unreadable(err.strerror or str(err)) from None
    if not stat.S_ISREG(before.st_mode):
        raise Unreadable("not a regular file")
    try:
        with open(path, "rb") as fh:
            now = os.fstat(fh.fileno())  # the file opened is the one checked, even if the path changed since
            if not stat.S_ISREG(now.st_mode):
                raise Unreadable("not a regular file")
            if now.st_size > max_bytes:
                raise Unreadable(f"{now.st_size} bytes, over the limit of {max_bytes}")
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise Missing("no such file") from None
    except OSError as err:
        raise Unreadable(err.strerror or str(err)) from None
    if len(data) > max_bytes:
        raise Unreadable(f"over the limit of {max_bytes} bytes")
    return data, now.st_mtime_ns


def make_whole(data: bytes, mtime_ns: int) -> Whole:
    """Hash, measure and thumbnail one image file; Unreadable when it is not an accepted, sound image."""
    mime = sniff.image_type(data[:64])
    if mime is None:
        raise Unreadable("not an image (by content)")
    try:
        with Image.open(io.BytesIO(data), formats=[sniff.PIL_FORMATS[mime]]) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise Unreadable(f"{width}x{height} pixels, over the limit of {MAX_PIXELS}")
            im.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))  # JPEG: decode at 1/2..1/8 scale, enough here
            im.load()
            facts = exif.read(im)
            thumbnail = make_thumbnail(upright(im, facts.orientation))
    except Unreadable:
        raise
    except Exception as err:  # Pillow reports corrupt data with many exception types
        raise Unreadable(f"corrupt {mime} image: {err}") from None
    if facts.orientation >= 5:
        width, height = height, width
    return Whole(hashlib.sha256(data).hexdigest(), data, mime, width, height, thumbnail, facts, mtime_ns)


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """The picture as it is meant to be seen, from its EXIF orientation (1-8; anything else: as stored)."""
    return im.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else im


def make_thumbnail(im: Image.Image) -> bytes:
    """A JPEG whose longest side is THUMBNAIL_SIZE (never enlarged), transparency laid on white."""
    if im.mode not in ("RGB", "L"):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    scale = min(1.0, THUMBNAIL_SIZE / max(im.size))
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    thumb = im if im.size == size else im.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()
