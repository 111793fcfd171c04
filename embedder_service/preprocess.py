"""Image bytes to the image tower's input tensor, plus size, content type, thumbnail and EXIF facts, from one decode.

With the CLIP rule (shortest_edge_center_crop, bicubic) the tensor equals transformers' CLIPImageProcessor
(its PIL backend, the one used without torchvision): composite transparency onto white, PIL bicubic resize
of the shortest side, centre crop, x/255, then (x - mean) / std in float32. The squash rule (SigLIP)
resizes both sides to the size instead, with no crop. Deliberate differences from the reference: EXIF
orientation is applied first, and 16-bit/float images are scaled to 8 bits (the reference clips them, mostly to white).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from embedder_service.models.bundle import CLIP_MEAN, CLIP_STD, ImageSpec
from semsearch_common import exif, sniff
from semsearch_common.errors import InvalidArgument


class ImageError(InvalidArgument, ValueError):
    """Bad input image; message is user-facing (says what is wrong)."""


@dataclass(frozen=True)
class Decoded:
    """A preprocessed image and what was learnt decoding it."""

    pixels: NDArray[np.float32]  # [3, S, S], normalized, C-contiguous
    width: int  # of the original, after EXIF orientation
    height: int
    content_type: str
    thumbnail: bytes | None  # JPEG, longest side thumbnail_size; None when none was asked for
    facts: exif.Facts = field(default_factory=exif.Facts)  # what the file's EXIF says, read from this open


@dataclass(frozen=True)
class PreprocessSpec:
    """How to turn an image into model input, and the limits on what is accepted."""

    image_size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize: str = "shortest_edge_center_crop"  # or "squash": both sides to image_size, no crop
    interpolation: str = "bicubic"
    # Width*height cap, checked on the header before any pixel is decoded. Pillow itself refuses
    # anything over 2 * Image.MAX_IMAGE_PIXELS (about 179 MP) whatever this says.
    max_pixels: int = 40_000_000
    max_bytes: int = 64 * 1024 * 1024
    draft: bool = False  # decode large JPEGs at 1/2, 1/4 or 1/8 scale (DCT scaling); faster, not exact


def spec_of(image: ImageSpec, max_pixels: int, max_bytes: int, draft: bool) -> PreprocessSpec:
    """The preprocessing a bundle's image section names, with the service's limits."""
    return PreprocessSpec(image_size=image.size, mean=image.mean, std=image.std, resize=image.resize,
                          interpolation=image.interpolation, max_pixels=max_pixels, max_bytes=max_bytes, draft=draft)


INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                  "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}
# Pillow's format name -> MIME type. Phone cameras' multi-picture JPEGs (MPO) are opened by the JPEG plugin,
# and their first picture is a plain JPEG.
CONTENT_TYPES = {fmt: mime for mime, fmt in sniff.PIL_FORMATS.items()} | {"MPO": "image/jpeg"}
# Pillow's plugins signal malformed input with many exception types; all of them mean "bad image".
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, struct.error, EOFError,
    ArithmeticError, MemoryError, Image.DecompressionBombError,
    Image.DecompressionBombWarning,  # raised, not just emitted, where warnings are turned into errors
)
_OPEN_FORMATS = list(sniff.PIL_FORMATS.values())
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# EXIF orientation -> whether the x and y axes run backwards after transposition; 5 to 8 also swap them.
_REVERSED_AXES = {2: (True, False), 3: (True, True), 4: (False, True), 5: (False, False), 6: (True, False),
                  7: (True, True), 8: (False, True)}
# EXIF orientation -> the transposition that makes the picture upright (as ImageOps.exif_transpose does).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
Region = tuple[float, float, float, float]  # left, top, right, bottom in pixels of a decoded image
# Above this many pixels the full shortest-side resize is skipped for a crop-only resize (extreme
# aspect ratios: a 1x100000 strip would need a 224x22400000 intermediate).
_MAX_RESIZED_PIXELS = 4_000_000
THUMBNAIL_QUALITY = 85


def decode(data: bytes, spec: PreprocessSpec, thumbnail_size: int = 0) -> Decoded:
    """Decode encoded image bytes into the CLIP tensor, the oriented size and an optional JPEG thumbnail."""
    if thumbnail_size < 0:
        raise ValueError(f"thumbnail_size must be >= 0, got {thumbnail_size}")
    if not data:
        raise ImageError("empty image data")
    if len(data) > spec.max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over the limit of {spec.max_bytes}")
    with _open(data, spec) as im:
        width, height = im.size
        content_type = CONTENT_TYPES[im.format or ""]
        try:
            scale = _request_draft(im, spec.image_size, thumbnail_size) if spec.draft else 1
            im.load()
            # After load: a PNG's eXIf chunk may follow its pixels. The reader never raises for bad EXIF.
            facts = exif.read(im)
            orientation = facts.orientation
            # Transposed here rather than by ImageOps.exif_transpose, which re-encodes the EXIF block and
            # would fail the image on the very metadata the reader chose to ignore.
            upright = im.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else im
            rgb = _to_rgb(upright)
        except _DECODE_ERRORS as exc:
            raise ImageError(f"corrupt or truncated {im.format} image: {exc}") from None
        if orientation >= 5:
            width, height = height, width
        region = _draft_region(rgb.size, width / scale, height / scale, orientation)
        pixels = _clip_pixels(rgb, region, width, height, spec)
        thumbnail = _thumbnail(rgb, region, _fit(width, height, thumbnail_size)) if thumbnail_size else None
    return Decoded(pixels, width, height, content_type, thumbnail, facts)


def _open(data: bytes, spec: PreprocessSpec) -> Image.Image:
    """Parse the header only, and refuse what is not an accepted format or has too many pixels."""
    try:
        im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(_unidentified(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image has too many pixels: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"corrupt image header: {exc}") from None
    width, height = im.size
    if width * height > spec.max_pixels:
        im.close()
        raise ImageError(f"image is {width}x{height} pixels, over the limit of {spec.max_pixels} pixels")
    return im


def _unidentified(data: bytes) -> str:
    """Say what the bytes look like: a damaged accepted format, or some other kind of file."""
    head = data[:512]
    mime = sniff.image_type(head)
    if mime is not None:
        return f"corrupt {sniff.PIL_FORMATS[mime]} header"
    kind = sniff.other_kind(head) or _textual_kind(head)
    return f"unsupported format ({kind}); accepted: {', '.join(_OPEN_FORMATS)}"


def _textual_kind(head: bytes) -> str:
    """Name markup and plain text, which have no magic number; anything else is unknown binary data."""
    lowered = head.lstrip().lower()
    if b"<svg" in lowered or lowered.startswith(b"<?xml"):
        return "SVG/XML"
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown binary data"
    return "text"


def _request_draft(im: Image.Image, image_size: int, thumbnail_size: int) -> int:
    """Ask a JPEG decoder for the coarsest DCT scale that still covers the crop and the thumbnail."""
    if im.format not in ("JPEG", "MPO"):
        return 1
    short, long = sorted(im.size)
    for scale in (8, 4, 2):
        # Floor division is conservative: the decoder's ceil(side / scale) is at least as large.
        if short // scale >= image_size and long // scale >= thumbnail_size:
            # Pillow picks the largest scale s with size // request >= s, which is exactly this one.
            im.draft(im.mode, (im.width // scale, im.height // scale))
            return scale
    return 1


def _draft_region(size: tuple[int, int], valid_w: float, valid_h: float, orientation: int) -> Region:
    """Where the picture lies in a (transposed) draft decode, whose last row and column are partial.

    At scale s the decoder makes ceil(w / s) columns of which w / s cover the picture; after an EXIF
    transposition the partial column or row is on the left or top when that axis was reversed.
    """
    reverse_x, reverse_y = _REVERSED_AXES.get(orientation, (False, False))
    left = size[0] - valid_w if reverse_x else 0.0
    top = size[1] - valid_h if reverse_y else 0.0
    return left, top, left + valid_w, top + valid_h


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB as the reference makes it, or L where that gives the same bytes at a third of the work."""
    if im.mode in _HIGH_BIT_MODES:
        im = _to_8bit(im)
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        # The reference's exact steps, so half-transparent pixels round the same way.
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
    if im.mode in ("RGB", "L"):
        return im
    # "1" becomes 0/255 grey; P, CMYK, YCbCr, LAB... go through Pillow's own conversion, as in the reference.
    return im.convert("L" if im.mode == "1" else "RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float greyscale image to 8 bits instead of clipping it at 255.

    A transparent key value (PNG tRNS), rare at these depths, is dropped.
    """
    values = np.asarray(im)
    if im.mode.startswith("I;16"):
        return Image.fromarray(((values.astype(np.uint32) + 128) // 257).astype(np.uint8))
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    # The bit depth is not recorded for I and F, so infer the range the data was meant in.
    if im.mode == "F" and low >= 0 and high <= 1:
        values = values * 255
    elif low < 0 or high > 65535:
        values = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    elif high > 255:
        values = values / 257
    return Image.fromarray(np.rint(values).astype(np.uint8))


def _resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Shortest side to size, the other int()-truncated, exactly as transformers computes it."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _clip_pixels(
    img: Image.Image, region: Region, width: int, height: int, spec: PreprocessSpec
) -> NDArray[np.float32]:
    """Resize, centre crop and normalize the width x height picture at `region` of img into [3, S, S]."""
    size = spec.image_size
    new_w, new_h = (size, size) if spec.resize == "squash" else _resized_size(width, height, size)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    resample = INTERPOLATIONS[spec.interpolation]
    if region == (0, 0, *img.size) and new_w * new_h <= _MAX_RESIZED_PIXELS:
        resized = img.resize((new_w, new_h), resample)
        crop = resized.crop((left, top, left + size, top + size))
    else:
        # Resample only the crop's source region: for draft decodes, and for extreme aspect ratios where
        # it equals the full resize up to rounding.
        x0, y0, x1, y1 = region
        sx, sy = (x1 - x0) / new_w, (y1 - y0) / new_h
        box = (x0 + left * sx, y0 + top * sy, x0 + (left + size) * sx, y0 + (top + size) * sy)
        crop = img.resize((size, size), resample, box=box)
    levels = np.asarray(crop)
    table = _normalize_table(spec.mean, spec.std)
    out = np.empty((3, size, size), dtype=np.float32)
    for channel in range(3):
        plane = levels if levels.ndim == 2 else levels[:, :, channel]
        # uint8 indices are always in range; mode="clip" just skips the buffered bounds check of "raise".
        np.take(table[channel], plane, out=out[channel], mode="clip")
    return out


@lru_cache(maxsize=8)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """[3, 256] float32: every 8-bit level already rescaled and normalized, with the reference's rounding."""
    # The reference multiplies in float64, casts to float32, then subtracts and divides in float32.
    scaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean32, std32 = np.asarray(mean, np.float32)[:, None], np.asarray(std, np.float32)[:, None]
    table = (scaled[None, :] - mean32) / std32
    table.setflags(write=False)
    return table


def _fit(width: int, height: int, longest: int) -> tuple[int, int]:
    """Thumbnail size: the longest side becomes `longest`; smaller images are not enlarged."""
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _thumbnail(img: Image.Image, region: Region, size: tuple[int, int]) -> bytes:
    """A small RGB JPEG of the decoded image (transparency already on white)."""
    if img.size == size and region == (0, 0, *size):
        thumb = img
    else:
        # reducing_gap lets Pillow box-reduce by an integer factor first: much faster, visually the same.
        thumb = img.resize(size, Image.Resampling.BICUBIC, box=region, reducing_gap=2.0)
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()
