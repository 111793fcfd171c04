"""Cheap checks of uploaded bytes before they travel to the embedder: is it an image, how many pixels."""

from __future__ import annotations

import io
import warnings

from PIL import Image

from gateway.errors import ApiError
from semsearch_common import sniff

SERVED_TYPES = sniff.IMAGE_TYPES  # what /images/{id} may be typed as: the formats the embedder decodes


def check(data: bytes, name: str, max_bytes: int, max_pixels: int) -> str:
    """Raise the right ApiError for an empty, oversized, non-image or pixel-bomb upload; return its type.

    Only the header is parsed (Pillow opens lazily), so a decompression bomb is refused before anyone
    allocates its pixels. Corrupt image data past the header is left to the embedder, which decodes.
    """
    if not data:
        raise ApiError(400, f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise ApiError(413, f"{name}: {len(data):,} bytes; the limit is {max_bytes:,}")
    mime = sniff.image_type(data)
    if mime is None:
        kind = sniff.other_kind(data)  # say what came instead, when we know
        raise ApiError(415, f"{name}: {kind + ', ' if kind else ''}not an image (JPEG, PNG, WebP, GIF, BMP or TIFF "
                            "expected)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise ApiError(413, f"{name}: too many pixels") from None
    except Exception as err:  # any header Pillow cannot read is the client's corrupt file
        raise ApiError(400, f"{name}: corrupt {mime.split('/')[1].upper()} header ({err.__class__.__name__})") from None
    if width * height > max_pixels:
        raise ApiError(413, f"{name}: {width}x{height} pixels; the limit is {max_pixels:,} pixels")
    return mime
