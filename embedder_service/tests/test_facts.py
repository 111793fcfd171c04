"""Photo facts from the one decode: read from the open image, the size after orientation, lies never fatal."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from embedder_service.facts import to_proto
from embedder_service.preprocess import PreprocessSpec, decode
from semsearch_common import exif
from tests.support import exif as E

SPEC = PreprocessSpec(image_size=32)


def test_decode_returns_every_fact_of_the_file() -> None:
    out = decode(E.photo(E.full(), 64, 48), SPEC, thumbnail_size=16)
    assert out.facts.taken_at == E.FULL_TAKEN_AT and out.facts.taken_offset_minutes == 120
    assert (out.facts.camera_make, out.facts.camera_model) == ("Canon", "Canon EOS R5")
    assert out.facts.latitude == pytest.approx(48.8582, abs=1e-6) and out.facts.notes == ()


@pytest.mark.parametrize(("orientation", "size", "left_colour"), [
    (1, (64, 48), "red"), (6, (48, 64), "top red"), (8, (48, 64), "bottom red"), (3, (64, 48), "blue")])
def test_the_size_and_thumbnail_are_those_after_orientation(orientation: int, size: tuple[int, int],
                                                            left_colour: str) -> None:
    out = decode(E.photo(E.full(orientation), 64, 48), SPEC, thumbnail_size=64)
    assert (out.width, out.height) == size and out.facts.orientation == orientation
    thumb = Image.open(io.BytesIO(out.thumbnail or b"")).convert("RGB")
    assert thumb.size == size
    # The picture's left half is red: rotated 90° clockwise (6) it lies on top, anticlockwise (8) at the bottom.
    w, h = thumb.size
    probe = {"red": (2, h // 2), "blue": (2, h // 2), "top red": (w // 2, 2), "bottom red": (w // 2, h - 3)}
    red, _, blue = thumb.getpixel(probe[left_colour])  # type: ignore[misc]
    assert (red > blue) == (left_colour != "blue")


@pytest.mark.parametrize("block", [
    E.full()[:16],  # truncated
    E.block(ifd0=[E.ascii(E.ORIENTATION, "six"), E.undefined(E.MAKE, b"\xff\xfe")],
            exif=[E.ascii(E.DATE_TIME_ORIGINAL, "2999:01:01 00:00:00"), E.ascii(E.OFFSET_TIME_ORIGINAL, "+99:00")],
            gps=[E.ascii(E.LAT_REF, "N"), E.rational(E.LAT, (1, 0)),
                 E.ascii(E.LON_REF, "E"), E.rational(E.LON, (1, 1))]),
])
def test_lying_exif_never_fails_the_image(block: bytes) -> None:
    out = decode(E.photo(block, 64, 48), SPEC)
    assert (out.width, out.height) == (64, 48) and out.pixels.shape == (3, 32, 32)
    assert out.facts.taken_at is None and out.facts.latitude is None and out.facts.notes


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_picture_without_exif_has_empty_facts(fmt: str) -> None:
    facts = decode(E.photo(None, fmt=fmt), SPEC).facts
    assert facts == exif.Facts()
    assert to_proto(facts) == to_proto(exif.Facts()) and not to_proto(facts).HasField("taken_at")


def test_the_proto_sets_the_optional_fields_only_when_stated() -> None:
    stated = to_proto(exif.Facts(taken_at=0, taken_offset_minutes=0, latitude=0.0, longitude=0.0, notes=("n",)))
    assert stated.HasField("taken_at") and stated.HasField("taken_offset_minutes")
    assert stated.HasField("latitude") and stated.HasField("longitude") and list(stated.notes) == ["n"]
