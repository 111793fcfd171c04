"""Photo-like JPEGs for tests and benchmarks: smooth shapes, texture at several scales and sensor grain."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image that compresses like a photograph (a 12 MP one is about 2.8 MB as a quality-90 JPEG)."""
    rng = np.random.default_rng(seed)
    out = np.full((height, width, 3), 128, dtype=np.int16)
    for cells, weight in ((4, 90), (24, 40), (160, 22), (700, 12)):
        small = rng.integers(0, 256, (max(2, cells * height // width), cells, 3), dtype=np.uint8)
        layer = np.asarray(Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC))
        out += (layer.astype(np.int16) - 128) * weight // 128
    out += rng.integers(-8, 9, out.shape, dtype=np.int16)  # sensor grain
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def photo_jpeg(width: int, height: int, orientation: int = 1, quality: int = 90, seed: int = 0) -> bytes:
    """A photo-like JPEG whose EXIF says how to turn it (1 = as stored, 6 = turn 90° clockwise to view)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    photo(width, height, seed).save(buf, "JPEG", quality=quality, exif=exif)
    return buf.getvalue()
