"""Test images made on the fly with Pillow: no binary fixtures in the repository."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo(width: int = 300, height: int = 250, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients plus noise), different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    freq = rng.uniform(0.005, 0.05, 3)
    channels = [127 + 100 * np.sin(freq[c] * (x + y * (c + 1)) + phase[c]) for c in range(3)]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    """The image encoded in a file format."""
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def jpeg(width: int = 300, height: int = 250, seed: int = 0) -> bytes:
    """A photo-like JPEG."""
    return encode(photo(width, height, seed), "JPEG", quality=90)


def pixel_bomb_png(side: int = 30_000) -> bytes:
    """A tiny PNG file that claims side x side pixels."""
    return encode(Image.new("1", (side, side)), "PNG", optimize=True)
