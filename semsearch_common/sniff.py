"""What kind of file some bytes are, from their leading magic numbers (no decoding)."""

from __future__ import annotations

# The formats the embedder decodes (embedder.proto: JPEG, PNG, WebP, GIF, BMP, TIFF), by MIME type.
IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
# Pillow's format name of each MIME type above.
PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/bmp": "BMP",
               "image/tiff": "TIFF", "image/webp": "WEBP"}
IMAGE_TYPES = frozenset(PIL_FORMATS)
# Files people upload by mistake, named so an error can say what was sent instead of an image.
OTHER_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x00\x00\x01\x00", "an icon file"),
    (b"8BPS", "a Photoshop document"),
)


def image_type(data: bytes) -> str | None:
    """The MIME type of a supported image format the bytes start with, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in IMAGE_SIGNATURES if data.startswith(magic)), None)


def other_kind(data: bytes) -> str | None:
    """A description of a known non-image file the bytes start with, or None."""
    return next((kind for magic, kind in OTHER_SIGNATURES if data.startswith(magic)), None)
