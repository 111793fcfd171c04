"""Hostile and odd image files, made in code: every entry says what it is and what the system must answer.

No binary file is committed; `corpus()` builds each one with Pillow, zlib and struct in well under a second
(the bombs are tiny files that only declare huge sizes, or compress long runs of zeros).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

OK, ERROR = "ok", "error"
NOT_AN_IMAGE = frozenset({415})  # refused by the gateway's magic-number sniffing
CORRUPT = frozenset({400})  # an image type, but its bytes cannot be decoded
TOO_BIG = frozenset({400, 413})  # declared dimensions over the limit (413), or a header the decoder refuses


@dataclass(frozen=True)
class BadFile:
    """One corpus file: its name, bytes, what it is, and the right outcome."""

    name: str
    data: bytes
    what: str
    expect: str  # OK: embedded and stored like any image; ERROR: a 4xx / per-item error
    http: frozenset[int] = frozenset()  # acceptable gateway statuses for an ERROR
    size: tuple[int, int] | None = None  # (width, height) the embedder must report for an OK, after EXIF

    @property
    def ok(self) -> bool:
        """Whether the file must be accepted."""
        return self.expect == OK


# --- building blocks --------------------------------------------------------------------------------------

def photo(width: int = 96, height: int = 72, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A small noisy picture, distinct per seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """The image in a file format."""
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk with its length and (by default, correct) CRC."""
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc & 0xFFFFFFFF)


def png_raw(width: int, height: int, bit_depth: int, colour: int, idat: bytes,
            extra: bytes = b"", ihdr_crc: int | None = None) -> bytes:
    """A PNG from its parts: IHDR, optional chunks, one IDAT, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr, ihdr_crc) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def zeros_deflated(row_bytes: int, rows: int) -> bytes:
    """zlib stream of `rows` filter-0 rows of zeros, compressed without ever holding them all."""
    comp = zlib.compressobj(9)
    row = bytes(row_bytes + 1)
    out = [comp.compress(row) for _ in range(rows)]
    out.append(comp.flush())
    return b"".join(out)


def zeros_zlib(n: int) -> bytes:
    """zlib stream of n zero bytes, compressed in 1 MB pieces."""
    comp = zlib.compressobj(9)
    block = bytes(1 << 20)
    out = [comp.compress(block[: min(len(block), n - i)]) for i in range(0, n, len(block))]
    out.append(comp.flush())
    return b"".join(out)


def png_bomb(side: int) -> bytes:
    """A complete, valid 1-bit PNG of side x side pixels: a few KB that decode to side² bytes."""
    return png_raw(side, side, 1, 0, zeros_deflated((side + 7) // 8, side))


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(encode(photo(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_header_only(width: int, height: int) -> bytes:
    """A GIF whose screen and only frame are width x height, with an LZW stream of just clear + end codes."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00"
    return screen + frame + b"\x3b"


def gif_frame_beyond_screen() -> bytes:
    """A 16x16 GIF screen whose frame claims 60000x60000 pixels."""
    good = gif_header_only(16, 16)
    descriptor = good.index(b"\x2c")
    return good[:descriptor + 5] + struct.pack("<HH", 60000, 60000) + good[descriptor + 9:]


def webp_vp8l_header(width: int, height: int) -> bytes:
    """A lossless WebP header declaring width x height, followed by junk instead of pixel data."""
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 32
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bmp_header(width: int, height: int, bpp: int, offset: int, pixels: bytes = b"") -> bytes:
    """A BMP file header + BITMAPINFOHEADER with whatever values we like."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, offset) + info + pixels


def tiff(width: int, height: int, strip: bytes, compression: int = 1, strip_offset: int | None = None,
         strip_bytes: int | None = None, bits: int = 8) -> bytes:
    """A little-endian greyscale TIFF with one strip; offsets and counts can lie."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, compression),
               (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height),
               (279, 4, 1, len(strip) if strip_bytes is None else strip_bytes)]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    entries[5] = (273, 4, 1, data_offset if strip_offset is None else strip_offset)
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + strip


def a_zip(files: dict[str, bytes]) -> bytes:
    """A zip archive holding `files`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in files.items():
            z.writestr(name, body)
    return buf.getvalue()


def exif_jpeg(orientation: int = 1, comment_bytes: int = 0, seed: int = 0, size: tuple[int, int] = (96, 64)) -> bytes:
    """A JPEG with an EXIF block: an orientation and optionally a huge UserComment."""
    image = photo(*size, seed=seed)
    exif = image.getexif()
    exif[0x0112] = orientation
    if comment_bytes:
        exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + b"A" * comment_bytes
    return encode(image, "JPEG", exif=exif.tobytes())


def with_app_segments(jpeg: bytes, count: int, marker: int = 0xEF, size: int = 65533) -> bytes:
    """A JPEG with `count` maximal APPn segments inserted after SOI."""
    body = b"X" * (size - 2)
    segment = bytes([0xFF, marker]) + struct.pack(">H", size) + body
    return jpeg[:2] + segment * count + jpeg[2:]


def corrupt_exif_jpeg() -> bytes:
    """A JPEG whose EXIF IFD claims 65535 entries pointing past the end of the block."""
    tiff_header = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + b"\x12\x01\x03\x00" * 4
    app1 = b"Exif\x00\x00" + tiff_header
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    base = encode(photo(64, 48, seed=7), "JPEG")
    return base[:2] + segment + base[2:]


def flip(data: bytes, start: float, length: int = 64) -> bytes:
    """`data` with `length` bytes from fraction `start` of it replaced by 0x00/0xFF noise."""
    i = int(len(data) * start)
    noise = bytes((0xFF if k % 3 else 0x00) for k in range(length))
    return data[:i] + noise + data[i + length:]


def animated(fmt: str, **options: object) -> bytes:
    """A three-frame animation in GIF, WebP or PNG (APNG)."""
    frames = [photo(64, 48, seed=40 + i) for i in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)


# --- the corpus -------------------------------------------------------------------------------------------

HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>\n"
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<script>alert(1)</script><rect width="10" height="10"/></svg>')
SVG_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
              b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><svg xmlns="http://www.w3.org/2000/svg">&c;</svg>')
PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
       b"trailer<</Root 1 0 R>>\n%%EOF\n")
GREY16 = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20
FLOATS = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(30, 40)
JAR = {"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\nMain-Class: Evil\n", "Evil.class": b"\xca\xfe\xba\xbe"}


def _entries() -> list[tuple[str, Callable[[], bytes], str, str, frozenset[int], tuple[int, int] | None]]:
    jpeg = encode(photo(96, 72, seed=1), "JPEG", quality=90)
    png = encode(photo(96, 72, seed=2), "PNG")
    gif = encode(photo(96, 72, seed=3), "GIF")
    webp = encode(photo(96, 72, seed=4), "WEBP", quality=80)
    return [
        # Not images at all: refused by type before any decoder sees them.
        ("zero.jpg", lambda: b"", "zero bytes", ERROR, frozenset({400}), None),
        ("one-byte.jpg", lambda: b"\xff", "a single 0xFF byte", ERROR, NOT_AN_IMAGE, None),
        ("notes.txt", lambda: b"just some text, not a picture\n" * 20, "plain text", ERROR, NOT_AN_IMAGE, None),
        ("page.html", lambda: HTML, "HTML with a script", ERROR, NOT_AN_IMAGE, None),
        ("vector.svg", lambda: SVG, "SVG with a script", ERROR, NOT_AN_IMAGE, None),
        ("laughs.svg", lambda: SVG_LAUGHS, "SVG billion-laughs entity bomb", ERROR, NOT_AN_IMAGE, None),
        ("doc.pdf", lambda: PDF, "a minimal PDF", ERROR, NOT_AN_IMAGE, None),
        ("archive.zip", lambda: a_zip({"a.jpg": jpeg}), "a zip holding a JPEG", ERROR, NOT_AN_IMAGE, None),
        ("image.png.gz", lambda: zlib.compress(png), "a zlib-compressed PNG", ERROR, NOT_AN_IMAGE, None),
        ("icon.ico", lambda: encode(photo(32, 32), "ICO"), "an ICO (not an accepted format)", ERROR,
         NOT_AN_IMAGE, None),
        ("prog.exe", lambda: b"MZ\x90\x00" + bytes(200), "a DOS/Windows executable header", ERROR,
         NOT_AN_IMAGE, None),
        ("pdf-then-jpeg.jpg", lambda: PDF + jpeg, "PDF header followed by a JPEG", ERROR, NOT_AN_IMAGE, None),
        # Damaged images of accepted types.
        ("header-only.jpg", lambda: jpeg[:20], "JPEG cut after 20 bytes", ERROR, CORRUPT, None),
        ("half.jpg", lambda: jpeg[: len(jpeg) // 2], "JPEG cut in half", ERROR, CORRUPT, None),
        ("garbage.jpg", lambda: b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "JPEG magic then garbage", ERROR,
         CORRUPT, None),
        ("zero-size.jpg", lambda: jpeg_with_size(0, 0), "JPEG whose frame header says 0x0", ERROR, CORRUPT, None),
        ("html-magic.jpg", lambda: b"\xff\xd8\xff" + HTML, "HTML behind JPEG magic bytes", ERROR, CORRUPT, None),
        ("half.png", lambda: png[: len(png) // 2], "PNG cut in half", ERROR, CORRUPT, None),
        ("bad-crc.png", lambda: png_raw(8, 8, 8, 0, zlib.compress(bytes(9 * 8)), ihdr_crc=0xDEADBEEF),
         "PNG with a wrong IHDR checksum", ERROR, CORRUPT, None),
        ("zero-width.png", lambda: png_raw(0, 8, 8, 0, zlib.compress(bytes(8))), "PNG with width 0", ERROR,
         CORRUPT, None),
        ("bad-zlib.png", lambda: png_raw(64, 64, 8, 0, b"\x78\x9c" + bytes(range(200))), "PNG whose IDAT is "
         "not zlib", ERROR, CORRUPT, None),
        ("no-idat.png", lambda: png[:33] + png_chunk(b"IEND", b""), "PNG with no image data", ERROR, CORRUPT, None),
        ("ztxt-bomb.png", lambda: png_raw(8, 8, 8, 0, zlib.compress(bytes(72)), extra=png_chunk(
            b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(64 * 1024 * 1024), 9))),
         "PNG with a zTXt chunk inflating to 64 MB", ERROR, CORRUPT, None),
        ("half.gif", lambda: gif[: len(gif) // 2], "GIF cut in half", ERROR, CORRUPT, None),
        ("header.gif", lambda: gif[:13], "GIF screen descriptor only, no frame", ERROR, CORRUPT, None),
        ("half.webp", lambda: webp[: len(webp) // 2], "WebP cut in half", ERROR, CORRUPT, None),
        ("garbage.webp", lambda: webp[:20] + bytes(range(256)), "WebP header then garbage", ERROR, CORRUPT, None),
        ("bad-bpp.bmp", lambda: bmp_header(8, 8, 7, 54, bytes(64)), "BMP with 7 bits per pixel", ERROR,
         CORRUPT, None),
        ("strip-past-eof.tif", lambda: tiff(1000, 1000, b"", strip_offset=10**9, strip_bytes=10**6),
         "TIFF whose only strip lies 1 GB past the end of the file", ERROR, CORRUPT, None),
        # Pixel bombs and absurd dimensions: refused from the header, before pixels are allocated.
        ("bomb.png", lambda: png_bomb(30_000), "valid 1-bit PNG of 30000x30000 (0.9 GP) in ~100 KB", ERROR,
         TOO_BIG, None),
        ("over-cap.png", lambda: png_bomb(7_000), "valid 1-bit PNG of 7000x7000 (49 MP: over our 40 MP cap, "
         "under Pillow's)", ERROR, frozenset({413}), None),
        ("30k.jpg", lambda: jpeg_with_size(30_000, 30_000), "JPEG header claiming 30000x30000", ERROR, TOO_BIG, None),
        ("bomb.gif", lambda: gif_header_only(65_535, 65_535), "GIF claiming 65535x65535 in 40 bytes", ERROR,
         TOO_BIG, None),
        ("frame-bomb.gif", gif_frame_beyond_screen, "16x16 GIF whose frame claims 60000x60000", ERROR, TOO_BIG,
         None),
        ("bomb.webp", lambda: webp_vp8l_header(16_384, 16_384), "lossless WebP header claiming 16384x16384",
         ERROR, TOO_BIG, None),
        ("absurd.bmp", lambda: bmp_header(2**31 - 1, -(2**31), 24, 2**32 - 1), "BMP: width 2^31-1, height "
         "-2^31, pixel offset 4 GB", ERROR, TOO_BIG, None),
        ("bomb-strip.tif", lambda: tiff(100_000, 100_000, zeros_zlib(1), compression=8,
                                        strip_bytes=2**32 - 1),
         "TIFF of 100000x100000 whose strip claims 4 GB", ERROR, TOO_BIG, None),
        # Valid but odd: must be embedded and stored like any picture.
        ("cmyk.jpg", lambda: encode(photo(80, 60, seed=10, mode="CMYK"), "JPEG"), "CMYK JPEG", OK, frozenset(),
         (80, 60)),
        ("grey16.png", lambda: encode(Image.fromarray(GREY16), "PNG"), "16-bit grey PNG", OK, frozenset(), (64, 48)),
        ("float.tif", lambda: encode(Image.fromarray(FLOATS), "TIFF"), "32-bit float TIFF", OK, frozenset(), (40, 30)),
        ("mono.png", lambda: encode(photo(70, 50, seed=11, mode="1"), "PNG"), "1-bit PNG", OK, frozenset(), (70, 50)),
        ("mono-g4.tif", lambda: encode(photo(70, 50, seed=12, mode="1"), "TIFF", compression="group4"),
         "1-bit CCITT G4 TIFF", OK, frozenset(), (70, 50)),
        ("rotated.jpg", lambda: exif_jpeg(orientation=6, seed=13), "JPEG with EXIF orientation 6 (90° turn)", OK,
         frozenset(), (64, 96)),
        ("big-exif.jpg", lambda: exif_jpeg(comment_bytes=60_000, seed=14), "JPEG with a 60 KB EXIF block", OK,
         frozenset(), (96, 64)),
        ("many-app.jpg", lambda: with_app_segments(encode(photo(64, 48, seed=15), "JPEG"), 48),
         "JPEG with 48 maximal APP15 segments (3 MB of metadata)", OK, frozenset(), (64, 48)),
        ("bad-exif.jpg", corrupt_exif_jpeg, "JPEG whose EXIF IFD claims 65535 entries past its end", OK,
         frozenset(), (64, 48)),
        ("anim.gif", lambda: animated("GIF"), "animated GIF, 3 frames", OK, frozenset(), (64, 48)),
        ("anim.webp", lambda: animated("WEBP"), "animated WebP, 3 frames", OK, frozenset(), (64, 48)),
        ("anim.png", lambda: animated("PNG"), "APNG, 3 frames", OK, frozenset(), (64, 48)),
        ("strip.png", lambda: encode(Image.new("RGB", (1, 20_000), (200, 30, 30)), "PNG"), "1x20000 PNG "
         "(extreme aspect ratio)", OK, frozenset(), (1, 20_000)),
        ("zeros-36mp.tif", lambda: tiff(6000, 6000, zeros_zlib(6000 * 6000), compression=8),
         "36 MP greyscale TIFF of zeros, deflated to a few KB (under the cap: decoded in bounded memory)", OK,
         frozenset(), (6000, 6000)),
        # Polyglots: a valid image with something else riding along; stored and served back as the image type.
        ("jpeg-zip.jpg", lambda: encode(photo(64, 48, seed=20), "JPEG") + a_zip({"x.txt": b"hi"}),
         "valid JPEG with a zip appended", OK, frozenset(), (64, 48)),
        ("jpeg-html.jpg", lambda: encode(photo(64, 48, seed=21), "JPEG") + HTML, "valid JPEG with HTML+script "
         "appended", OK, frozenset(), (64, 48)),
        ("gifar.gif", lambda: encode(photo(64, 48, seed=22), "GIF") + a_zip(JAR), "GIFAR: a GIF with a Java "
         "archive appended", OK, frozenset(), (64, 48)),
        ("png-pdf.png", lambda: encode(photo(64, 48, seed=23), "PNG") + PDF, "valid PNG with a PDF after IEND",
         OK, frozenset(), (64, 48)),
    ]


@cache
def corpus() -> tuple[BadFile, ...]:
    """Every corpus file, built once per process."""
    return tuple(BadFile(name, make(), what, expect, http, size) for name, make, what, expect, http, size in _entries())


def good_jpeg(seed: int, width: int = 96, height: int = 72) -> bytes:
    """A plain valid JPEG, distinct per seed."""
    return encode(photo(width, height, seed=seed), "JPEG", quality=90)
