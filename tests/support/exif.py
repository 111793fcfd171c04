"""EXIF blocks built byte by byte, so tests can write any value of any type (lies included) into a photo.

Pillow's Exif writer checks types and picks its own; a camera's firmware does neither. A block here is
"Exif\\0\\0" and a little-endian TIFF: IFD0, then the Exif sub-IFD and the GPS IFD it points at.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

from PIL import Image

Entry = tuple[int, int, int, bytes]  # tag, TIFF type, count, value bytes

MAKE, MODEL, ORIENTATION = 0x010F, 0x0110, 0x0112
EXIF_POINTER, GPS_POINTER = 0x8769, 0x8825
DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
LAT_REF, LAT, LON_REF, LON = 1, 2, 3, 4
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED = 1, 2, 3, 4, 5, 7


def ascii(tag: int, text: str) -> Entry:
    """A NUL-terminated ASCII (latin-1) value."""
    data = text.encode("latin-1") + b"\x00"
    return tag, _ASCII, len(data), data


def short(tag: int, *values: int) -> Entry:
    """One or more unsigned 16-bit values."""
    return tag, _SHORT, len(values), struct.pack(f"<{len(values)}H", *values)


def rational(tag: int, *pairs: tuple[int, int]) -> Entry:
    """Unsigned rationals (numerator, denominator); a zero denominator is allowed on purpose."""
    return tag, _RATIONAL, len(pairs), b"".join(struct.pack("<LL", n, d) for n, d in pairs)


def undefined(tag: int, data: bytes) -> Entry:
    """Raw bytes (type UNDEFINED): what Pillow hands back as bytes."""
    return tag, _UNDEFINED, len(data), data


def byte(tag: int, *values: int) -> Entry:
    """Unsigned 8-bit values (Pillow hands back an int or a tuple of ints)."""
    return tag, _BYTE, len(values), bytes(values)


def raw(tag: int, kind: int, count: int, data: bytes) -> Entry:
    """An entry exactly as given: a count that does not match the data lies about its size."""
    return tag, kind, count, data


def dms(degrees: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Degrees as EXIF's degrees, minutes, seconds rationals (seconds in 1/1000)."""
    whole = int(degrees)
    minutes = int((degrees - whole) * 60)
    seconds = round(((degrees - whole) * 60 - minutes) * 60 * 1000)
    return (whole, 1), (minutes, 1), (seconds, 1000)


def block(ifd0: Sequence[Entry] = (), exif: Sequence[Entry] = (), gps: Sequence[Entry] = ()) -> bytes:
    """The APP1 payload: "Exif\\0\\0" + TIFF with IFD0 and, when given, the Exif and GPS sub-IFDs."""
    ifd0 = list(ifd0)
    sizes = [_size(len(ifd0) + bool(exif) + bool(gps), ifd0), _size(len(exif), exif), _size(len(gps), gps)]
    exif_at = 8 + sizes[0]
    gps_at = exif_at + (sizes[1] if exif else 0)
    if exif:
        ifd0.append((EXIF_POINTER, _LONG, 1, struct.pack("<L", exif_at)))
    if gps:
        ifd0.append((GPS_POINTER, _LONG, 1, struct.pack("<L", gps_at)))
    out = b"II*\x00" + struct.pack("<L", 8) + _ifd(ifd0, 8)
    if exif:
        out += _ifd(list(exif), exif_at)
    if gps:
        out += _ifd(list(gps), gps_at)
    return b"Exif\x00\x00" + out


def _size(count: int, entries: Sequence[Entry]) -> int:
    return 2 + 12 * count + 4 + sum(_padded(len(e[3])) for e in entries if len(e[3]) > 4)


def _padded(n: int) -> int:
    return n + n % 2


def _ifd(entries: list[Entry], start: int) -> bytes:
    """One directory at offset `start`, entries sorted by tag, values over 4 bytes after it."""
    entries = sorted(entries)
    data_at = start + 2 + 12 * len(entries) + 4
    head, tail = struct.pack("<H", len(entries)), b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            head += struct.pack("<HHL", tag, kind, count) + value.ljust(4, b"\x00")
        else:
            head += struct.pack("<HHLL", tag, kind, count, data_at + len(tail))
            tail += value.ljust(_padded(len(value)), b"\x00")
    return head + struct.pack("<L", 0) + tail


def photo(exif_block: bytes | None, width: int = 64, height: int = 48, fmt: str = "JPEG") -> bytes:
    """A small picture (left half red, right half blue) in `fmt` carrying the given EXIF block."""
    picture = Image.new("RGB", (width, height), (200, 30, 30))
    picture.paste((30, 30, 200), (width // 2, 0, width, height))
    buffer = io.BytesIO()
    options = {} if exif_block is None else {"exif": exif_block}
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


def full(orientation: int = 1) -> bytes:
    """A block stating every fact: Canon EOS R5, 2021-06-05 14:03:02 +02:00, 48.8582 N 2.2945 E."""
    return block(
        ifd0=[ascii(MAKE, "Canon"), ascii(MODEL, "Canon EOS R5"), short(ORIENTATION, orientation)],
        exif=[ascii(DATE_TIME_ORIGINAL, "2021:06:05 14:03:02"), ascii(OFFSET_TIME_ORIGINAL, "+02:00")],
        gps=[ascii(LAT_REF, "N"), rational(LAT, *dms(48.8582)), ascii(LON_REF, "E"), rational(LON, *dms(2.2945))],
    )


# 2021-06-05 14:03:02 at +02:00 is 12:03:02 UTC.
FULL_TAKEN_AT = 1622894582
