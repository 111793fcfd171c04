"""Display renditions: a JPEG of about 1600 px on the long side, made once from an original and kept beside it.

The viewer shows this instead of the original (a 12 MP phone JPEG is 2.8 MB; its rendition a tenth of
that). An original that is already that small and a type every browser shows is served as it is.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps

from index_service.media import CHUNK, MediaStore

log = logging.getLogger(__name__)

DISPLAY_SIDE = 1600
QUALITY = 85
SUFFIX = ".display.jpg"
AS_IS = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})  # what every browser shows
STRIPES = 64
# What to stream: its content type, its size in bytes and its bytes in chunks.
Stream = tuple[str, int, Iterator[bytes]]


def make_display(original: bytes, side: int = DISPLAY_SIDE) -> bytes | None:
    """The display JPEG of an original, or None when the original itself is fit to show (small, and a
    format every browser shows). Raises what Pillow raises for bytes it cannot decode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the embedder bounded it on the way in
        with Image.open(io.BytesIO(original)) as image:
            width, height = image.size  # before orientation: the long side is the same
            if max(width, height) <= side and Image.MIME.get(image.format or "") in AS_IS:
                return None
            scale = min(1.0, side / max(width, height))
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            # JPEG decodes at 1/2, 1/4 or 1/8 scale when asked first: a 12 MP photo decodes in a fraction.
            image.draft("RGB", target)
            icc = image.info.get("icc_profile")
            shown = ImageOps.exif_transpose(image)
            shown = _rgb(shown)
            shown.thumbnail((side, side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            shown.save(out, "JPEG", quality=QUALITY, optimize=True, progressive=True, icc_profile=icc)
            return out.getvalue()


def _rgb(image: Image.Image) -> Image.Image:
    """RGB for JPEG; transparency is laid on white, as a page's background most often is."""
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        back = Image.new("RGB", rgba.size, (255, 255, 255))
        back.paste(rgba, mask=rgba.getchannel("A"))
        return back
    return image if image.mode == "RGB" else image.convert("RGB")


class Renditions:
    """Display renditions in the media store: made on first request, then read from disk."""

    def __init__(self, media: MediaStore) -> None:
        self.media = media
        # Two first requests for one image make it once; different images rarely share a stripe.
        self._locks = [threading.Lock() for _ in range(STRIPES)]

    def display(self, sha256: str, content_type: str, width: int, height: int) -> Stream:
        """The display rendition of a stored original (FileNotFoundError when the original is missing)."""
        if content_type in AS_IS and 0 < max(width, height) <= DISPLAY_SIDE:
            return self._original(sha256, content_type)
        path = self.media.rendition_path(sha256, SUFFIX)
        kept = _read(path)
        if kept is not None:
            return kept
        with self._locks[int(sha256[:8], 16) % STRIPES]:
            kept = _read(path)  # the other first request made it while we waited
            if kept is not None:
                return kept
            original = b"".join(self.media.open(sha256))
            try:
                data = make_display(original)
            except Exception as err:  # not an image Pillow decodes (another client's bytes): show it as it is
                log.warning("no display rendition of %s: %s", sha256, err)
                return _memory(content_type, original)
            if data is None:
                return _memory(content_type, original)
            try:
                self.media.put_rendition(path, data)
            except OSError as err:  # a full or read-only store: the viewer still gets its image
                log.warning("display rendition of %s not kept: %s", sha256, err)
            return _memory("image/jpeg", data)

    def _original(self, sha256: str, content_type: str) -> Stream:
        return content_type, self.media.size(sha256), self.media.open(sha256)


def _read(path: Path) -> Stream | None:
    """A kept rendition, opened before it is sized so a sweep between the two cannot break the stream."""
    try:
        fh = open(path, "rb")  # closed by the generator that streams it
    except FileNotFoundError:
        return None
    return "image/jpeg", os.fstat(fh.fileno()).st_size, _chunks(fh)


def _chunks(fh: io.BufferedReader) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _memory(content_type: str, data: bytes) -> Stream:
    return content_type, len(data), iter([data])
