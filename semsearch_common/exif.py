"""What a photo's EXIF says (capture time, camera, place, orientation), read from an already-open image.

Pure Pillow and no protobuf, so the embedder (from its one decode) and the index (adopting the prototype's
rows) read it the same way. EXIF lies often: every field is checked on its own, and a field that fails
is left out with a one-line note. Nothing here raises for bad metadata; a photo never fails for its EXIF.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

# Above this the block is not parsed at all. A JPEG's APP1 segment holds at most 64 KiB, but a PNG
# eXIf or WebP EXIF chunk can claim megabytes, and parsing one costs memory and time for nothing.
MAX_EXIF_BYTES = 256 * 1024
# Make and Model longer than this are cut (real ones are under 40 characters).
MAX_CAMERA_CHARS = 64
# A note quotes at most this much of the value it rejects.
_QUOTE_CHARS = 40
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Capture times up to a day ahead of the reader's clock are accepted: cameras set to a zone east of UTC
# with no offset recorded read as up to 14 hours in the future.
_FUTURE_SLACK = timedelta(days=1)
_MAX_OFFSET_MINUTES = 840  # UTC+14:00 (Kiribati) and, the other way, down to -14:00
_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_REFS = {"GPSLatitude": {"N": 1.0, "S": -1.0}, "GPSLongitude": {"E": 1.0, "W": -1.0}}
_LIMITS = {"GPSLatitude": 90.0, "GPSLongitude": 180.0}


@dataclass(frozen=True)
class Facts:
    """What a file's own metadata says; unset (None or "") where it says nothing or lies."""

    taken_at: int | None = None  # seconds since the epoch (see PhotoFacts.taken_at in common.proto)
    taken_offset_minutes: int | None = None  # the capture time's stated offset from UTC
    camera_make: str = ""
    camera_model: str = ""
    latitude: float | None = None  # degrees, WGS84; set together with longitude
    longitude: float | None = None
    orientation: int = 1  # EXIF orientation 1..8; 1 when absent or invalid
    notes: tuple[str, ...] = ()  # one line per ignored field or block


class _Lie(ValueError):
    """A field whose value fails a check; its message becomes the note."""


def read(image: Image.Image, now: float | None = None) -> Facts:
    """The facts of an open (header-parsed or loaded) image; `now` (epoch seconds) bounds capture times."""
    notes: list[str] = []
    size = len(image.info.get("exif") or b"")
    if size > MAX_EXIF_BYTES:
        return Facts(notes=(f"EXIF block of {size} bytes is over {MAX_EXIF_BYTES}; ignored",))
    base = _block(lambda: dict(image.getexif()), "EXIF", notes)
    if not base and size and not notes:  # Pillow warns, rather than raises, on most truncations
        notes.append(f"EXIF block of {size} bytes holds no readable entry; ignored")
    if notes:  # the main directory is unreadable: the sub-directories it points at are not worth a try
        return Facts(notes=tuple(notes))
    exif_ifd = _block(lambda: image.getexif().get_ifd(ExifTags.IFD.Exif), "EXIF sub-IFD", notes)
    gps = _block(lambda: image.getexif().get_ifd(ExifTags.IFD.GPSInfo), "GPS IFD", notes)
    taken_at, offset = _capture_time(exif_ifd, time.time() if now is None else now, notes)
    latitude, longitude = _position(gps, notes)
    return Facts(taken_at=taken_at, taken_offset_minutes=offset,
                 camera_make=_field(base, ExifTags.Base.Make, "Make", _camera, notes) or "",
                 camera_model=_field(base, ExifTags.Base.Model, "Model", _camera, notes) or "",
                 latitude=latitude, longitude=longitude,
                 orientation=_field(base, ExifTags.Base.Orientation, "Orientation", _orientation, notes) or 1,
                 notes=tuple(notes))


def _block(load: Callable[[], Mapping[int, Any]], name: str, notes: list[str]) -> Mapping[int, Any]:
    """One IFD as a mapping, or an empty one with a note when Pillow cannot parse it."""
    try:
        return dict(load())
    except Exception as exc:  # Pillow raises struct.error, TypeError, KeyError, warnings-as-errors...
        notes.append(f"{name} is unreadable ({type(exc).__name__}); ignored")
        return {}


def _field(ifd: Mapping[int, Any], tag: int, name: str, check: Callable[[Any, list[str]], Any],
           notes: list[str]) -> Any:
    """A checked field value, or None (with a note when present but bad)."""
    if tag not in ifd:
        return None
    try:
        return check(ifd[tag], notes)
    except _Lie as lie:
        notes.append(f"{name} {lie}; ignored")
        return None


def _text(value: Any) -> str:
    """An EXIF ASCII value up to its first NUL, without control characters, trimmed."""
    if not isinstance(value, str):
        raise _Lie(f"has the wrong type ({type(value).__name__}, not text)")
    value = value.split("\x00", 1)[0]
    return "".join(c for c in value if unicodedata.category(c) != "Cc").strip()


def _quote(value: str) -> str:
    return value if len(value) <= _QUOTE_CHARS else value[:_QUOTE_CHARS] + "..."


def _camera(value: Any, notes: list[str]) -> str:
    text = _text(value)
    if len(text) > MAX_CAMERA_CHARS:
        notes.append(f"camera name {_quote(text)!r} cut to {MAX_CAMERA_CHARS} characters")
        text = text[:MAX_CAMERA_CHARS].rstrip()
    return text


def _orientation(value: Any, notes: list[str]) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    raise _Lie(f"{_quote(repr(value))} is not 1..8")


def _capture_time(ifd: Mapping[int, Any], now: float, notes: list[str]) -> tuple[int | None, int | None]:
    """DateTimeOriginal as epoch seconds, and OffsetTimeOriginal in minutes when stated and sane."""
    wall = _field(ifd, ExifTags.Base.DateTimeOriginal, "DateTimeOriginal", _wall_clock, notes)
    if wall is None:
        return None, None
    offset = _field(ifd, ExifTags.Base.OffsetTimeOriginal, "OffsetTimeOriginal", _offset, notes)
    instant = wall - timedelta(minutes=offset or 0)
    latest = datetime.fromtimestamp(now, UTC) + _FUTURE_SLACK
    stamp = wall.strftime("%Y:%m:%d %H:%M:%S")
    if instant < _EPOCH:
        notes.append(f"DateTimeOriginal {stamp} is before 1970; ignored")
        return None, None
    if instant > latest:
        notes.append(f"DateTimeOriginal {stamp} is in the future; ignored")
        return None, None
    return int((instant - _EPOCH).total_seconds()), offset


def _wall_clock(value: Any, notes: list[str]) -> datetime:
    """The camera's wall-clock time, as if in UTC (the offset is applied by the caller)."""
    text = _text(value)
    match = _DATE.fullmatch(text)
    if match is None:
        raise _Lie(f"{_quote(text)!r} is not a date (YYYY:MM:DD HH:MM:SS)")
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise _Lie(f"{_quote(text)!r} is not a real date") from None


def _offset(value: Any, notes: list[str]) -> int:
    text = _text(value)
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise _Lie(f"{_quote(text)!r} is not an offset (+HH:MM)")
    sign, hours, minutes = match.groups()
    total = (int(hours) * 60 + int(minutes)) * (-1 if sign == "-" else 1)
    if int(minutes) >= 60 or abs(total) > _MAX_OFFSET_MINUTES:
        raise _Lie(f"{text} is out of range (-14:00..+14:00)")
    return total


def _position(ifd: Mapping[int, Any], notes: list[str]) -> tuple[float | None, float | None]:
    """Latitude and longitude in signed degrees, both or neither."""
    if ExifTags.GPS.GPSLatitude not in ifd and ExifTags.GPS.GPSLongitude not in ifd:
        return None, None
    try:
        latitude = _coordinate(ifd, ExifTags.GPS.GPSLatitude, ExifTags.GPS.GPSLatitudeRef, "GPSLatitude")
        longitude = _coordinate(ifd, ExifTags.GPS.GPSLongitude, ExifTags.GPS.GPSLongitudeRef, "GPSLongitude")
    except _Lie as lie:
        notes.append(f"GPS position ignored: {lie}")
        return None, None
    return latitude, longitude


def _coordinate(ifd: Mapping[int, Any], tag: int, ref_tag: int, name: str) -> float:
    """Degrees from (degrees, minutes, seconds) rationals and an N/S or E/W reference."""
    if tag not in ifd:
        raise _Lie(f"{name} is missing")
    value = ifd[tag]
    parts = value if isinstance(value, tuple) else (value,)
    if not 1 <= len(parts) <= 3:
        raise _Lie(f"{name} has {len(parts)} parts, not 3")
    numbers = [_number(part, name) for part in parts]
    if any(n < 0 for n in numbers) or any(n >= 60 for n in numbers[1:]):
        raise _Lie(f"{name} {numbers} is not degrees, minutes, seconds")
    degrees = sum(n / 60.0**i for i, n in enumerate(numbers))
    try:
        ref = _text(ifd.get(ref_tag, "")).upper()
    except _Lie as lie:
        raise _Lie(f"{name}Ref {lie}") from None
    if ref not in _REFS[name]:
        raise _Lie(f"{name}Ref {_quote(ref)!r} is not one of {'/'.join(_REFS[name])}")
    if degrees > _LIMITS[name]:
        raise _Lie(f"{name} {degrees:.6f} is out of range (0..{_LIMITS[name]:g})")
    return degrees * _REFS[name][ref]


def _number(part: Any, name: str) -> float:
    """A finite number from an EXIF rational or integer."""
    if isinstance(part, IFDRational) and part.denominator == 0:
        raise _Lie(f"{name} has a zero denominator")
    if isinstance(part, bool) or not isinstance(part, int | float | IFDRational):
        raise _Lie(f"{name} has the wrong type ({type(part).__name__}, not a number)")
    number: float = float(part)
    if not math.isfinite(number):
        raise _Lie(f"{name} is not a finite number")
    return number
