"""The EXIF reader on photos whose EXIF the tests wrote byte by byte: every fact, and every kind of lie."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime

import pytest
from PIL import Image

from semsearch_common import exif
from tests.support import exif as E

NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def facts_of(data: bytes, now: float = NOW) -> exif.Facts:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return exif.read(im, now)


def with_exif(*entries: E.Entry, ifd0: tuple[E.Entry, ...] = (), gps: tuple[E.Entry, ...] = ()) -> exif.Facts:
    return facts_of(E.photo(E.block(ifd0=ifd0, exif=entries, gps=gps)))


def date(text: str, offset: str | None = None) -> exif.Facts:
    entries = [E.ascii(E.DATE_TIME_ORIGINAL, text)]
    if offset is not None:
        entries.append(E.ascii(E.OFFSET_TIME_ORIGINAL, offset))
    return with_exif(*entries)


def position(lat: E.Entry, lon: E.Entry, lat_ref: str = "N", lon_ref: str = "E") -> exif.Facts:
    return with_exif(gps=(E.ascii(E.LAT_REF, lat_ref), lat, E.ascii(E.LON_REF, lon_ref), lon))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_fact_is_read(fmt: str) -> None:
    facts = facts_of(E.photo(E.full(orientation=6), fmt=fmt))
    assert facts.taken_at == E.FULL_TAKEN_AT and facts.taken_offset_minutes == 120
    assert (facts.camera_make, facts.camera_model) == ("Canon", "Canon EOS R5")
    assert facts.latitude == pytest.approx(48.8582, abs=1e-6)
    assert facts.longitude == pytest.approx(2.2945, abs=1e-6)
    assert facts.orientation == 6 and facts.notes == ()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_a_file_without_exif_states_nothing_and_notes_nothing(fmt: str) -> None:
    assert facts_of(E.photo(None, fmt=fmt)) == exif.Facts()


def test_without_an_offset_the_wall_clock_reads_as_utc() -> None:
    facts = date("2021:06:05 14:03:02")
    assert facts.taken_at == int(datetime(2021, 6, 5, 14, 3, 2, tzinfo=UTC).timestamp())
    assert facts.taken_offset_minutes is None and facts.notes == ()


def test_a_negative_offset_moves_the_instant_later() -> None:
    facts = date("2021:06:05 14:03:02", "-05:30")
    assert facts.taken_at == int(datetime(2021, 6, 5, 19, 33, 2, tzinfo=UTC).timestamp())
    assert facts.taken_offset_minutes == -330


@pytest.mark.parametrize(("text", "note"), [
    ("1900:01:01 00:00:00", "before 1970"),
    ("1969:12:31 23:59:59", "before 1970"),
    ("2999:01:01 00:00:00", "in the future"),
    ("2026:01:02 12:00:00", "in the future"),  # more than a day past NOW
    ("0000:00:00 00:00:00", "not a real date"),
    ("2021:02:30 10:00:00", "not a real date"),
    ("yesterday", "not a date"),
    ("2021:06:05", "not a date"),
    ("", "not a date"),
])
def test_lying_capture_times_are_ignored_with_a_note(text: str, note: str) -> None:
    facts = date(text, "+01:00")
    assert facts.taken_at is None and facts.taken_offset_minutes is None
    assert len(facts.notes) == 1 and "DateTimeOriginal" in facts.notes[0] and note in facts.notes[0]


def test_a_time_within_a_day_ahead_is_accepted() -> None:
    assert date("2026:01:01 20:00:00").taken_at == int(NOW) + 20 * 3600


@pytest.mark.parametrize("offset", ["+15:00", "-14:01", "+02:75", "02:00", "+2", "Z"])
def test_a_lying_offset_is_ignored_and_the_time_kept_as_utc(offset: str) -> None:
    facts = date("2021:06:05 14:03:02", offset)
    assert facts.taken_at == int(datetime(2021, 6, 5, 14, 3, 2, tzinfo=UTC).timestamp())
    assert facts.taken_offset_minutes is None
    assert len(facts.notes) == 1 and facts.notes[0].startswith("OffsetTimeOriginal")


def test_camera_names_are_trimmed_cut_at_nul_stripped_of_controls_and_bounded() -> None:
    facts = with_exif(ifd0=(E.ascii(E.MAKE, "  NIKON CORPORATION \x00garbage"), E.ascii(E.MODEL, "D7\x07500\t ")))
    assert (facts.camera_make, facts.camera_model) == ("NIKON CORPORATION", "D7500") and facts.notes == ()
    long = with_exif(ifd0=(E.ascii(E.MODEL, "X" * 5000),))
    assert long.camera_model == "X" * exif.MAX_CAMERA_CHARS and "cut to" in long.notes[0]


@pytest.mark.parametrize("entry", [
    E.undefined(E.MAKE, b"Canon\x00\x00\x00"),  # bytes where text belongs
    E.short(E.MAKE, 1, 2),  # numbers where text belongs
    E.rational(E.MAKE, (1, 2)),
])
def test_a_camera_name_of_the_wrong_type_is_ignored_with_a_note(entry: E.Entry) -> None:
    facts = with_exif(ifd0=(entry, E.ascii(E.MODEL, "EOS R5")))
    assert facts.camera_make == "" and facts.camera_model == "EOS R5"
    assert len(facts.notes) == 1 and facts.notes[0].startswith("Make has the wrong type")


def test_a_date_of_the_wrong_type_is_ignored_with_a_note() -> None:
    facts = with_exif(E.short(E.DATE_TIME_ORIGINAL, 2021), ifd0=(E.ascii(E.MAKE, "Canon"),))
    assert facts.taken_at is None and facts.camera_make == "Canon"
    assert facts.notes[0].startswith("DateTimeOriginal has the wrong type")


def test_southern_and_western_positions_are_negative() -> None:
    facts = position(E.rational(E.LAT, *E.dms(33.8688)), E.rational(E.LON, *E.dms(151.2093)), "S", "W")
    assert facts.latitude == pytest.approx(-33.8688, abs=1e-6)
    assert facts.longitude == pytest.approx(-151.2093, abs=1e-6)


@pytest.mark.parametrize(("lat", "lon", "lat_ref", "note"), [
    (E.rational(E.LAT, (91, 1), (0, 1), (0, 1)), E.rational(E.LON, (2, 1), (0, 1), (0, 1)), "N", "out of range"),
    (E.rational(E.LAT, (48, 1), (0, 1), (0, 1)), E.rational(E.LON, (181, 1), (0, 1), (0, 1)), "N", "out of range"),
    (E.rational(E.LAT, (48, 0), (0, 1), (0, 1)), E.rational(E.LON, (2, 1), (0, 1), (0, 1)), "N", "zero denominator"),
    (E.rational(E.LAT, (48, 1), (75, 1), (0, 1)), E.rational(E.LON, (2, 1), (0, 1), (0, 1)), "N", "minutes"),
    (E.rational(E.LAT, (48, 1), (0, 1), (0, 1)), E.rational(E.LON, (2, 1), (0, 1), (0, 1)), "Q", "not one of N/S"),
    (E.ascii(E.LAT, "48.85"), E.rational(E.LON, (2, 1), (0, 1), (0, 1)), "N", "wrong type"),
    (E.rational(E.LAT, (1, 1), (2, 1), (3, 1), (4, 1)), E.rational(E.LON, (2, 1)), "N", "4 parts"),
])
def test_a_lying_position_is_ignored_whole_with_a_note(lat: E.Entry, lon: E.Entry, lat_ref: str, note: str) -> None:
    facts = position(lat, lon, lat_ref)
    assert facts.latitude is None and facts.longitude is None
    assert len(facts.notes) == 1 and facts.notes[0].startswith("GPS position ignored") and note in facts.notes[0]


def test_a_latitude_without_a_longitude_is_no_position() -> None:
    facts = with_exif(gps=(E.ascii(E.LAT_REF, "N"), E.rational(E.LAT, *E.dms(48.0))))
    assert facts.latitude is None and "GPSLongitude is missing" in facts.notes[0]


@pytest.mark.parametrize("value", [E.short(E.ORIENTATION, 9), E.short(E.ORIENTATION, 0), E.ascii(E.ORIENTATION, "6")])
def test_a_lying_orientation_reads_as_upright_with_a_note(value: E.Entry) -> None:
    facts = with_exif(ifd0=(value,))
    assert facts.orientation == 1 and facts.notes[0].startswith("Orientation")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("cut", [10, 16, 24])
def test_a_truncated_block_is_noted_and_nothing_else_fails(fmt: str, cut: int) -> None:
    facts = facts_of(E.photo(E.full()[:cut], fmt=fmt))
    assert facts.taken_at is None and facts.camera_make == "" and facts.orientation == 1
    assert len(facts.notes) == 1 and facts.notes[0].startswith("EXIF ")


def test_a_block_that_is_not_tiff_is_noted() -> None:
    facts = facts_of(E.photo(b"garbage!", fmt="PNG"))
    assert facts == exif.Facts(notes=("EXIF is unreadable (SyntaxError); ignored",))


def test_a_block_cut_inside_a_sub_directory_keeps_what_came_before() -> None:
    cut = E.full()[:-40]  # the GPS directory's values are gone
    facts = facts_of(E.photo(cut))
    assert facts.camera_model == "Canon EOS R5" and facts.taken_at == E.FULL_TAKEN_AT
    assert facts.latitude is None


def test_an_entry_claiming_a_huge_size_is_skipped() -> None:
    huge = E.raw(E.MAKE, 2, 0x7FFFFFF0, struct.pack("<L", 5000))  # 2 GB of text at an offset past the end
    facts = with_exif(E.ascii(E.DATE_TIME_ORIGINAL, "2021:06:05 14:03:02"), ifd0=(huge,))
    assert facts.camera_make == "" and facts.taken_at == 1622901782


def test_a_directory_pointer_of_the_wrong_type_is_noted() -> None:
    bad_pointer = E.ascii(E.GPS_POINTER, "somewhere")
    facts = facts_of(E.photo(E.block(ifd0=(E.ascii(E.MAKE, "Canon"), bad_pointer))))
    assert facts.camera_make == "Canon" and facts.latitude is None


def test_an_oversized_block_is_not_parsed() -> None:
    padding = E.undefined(0x927C, b"\x00" * (exif.MAX_EXIF_BYTES + 1))  # a MakerNote of 256 KiB
    data = E.photo(E.block(ifd0=(E.ascii(E.MAKE, "Canon"),), exif=(padding,)), fmt="PNG")
    facts = facts_of(data)
    assert facts.camera_make == "" and "over" in facts.notes[0]
