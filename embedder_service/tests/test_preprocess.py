"""Image preprocessing against transformers' CLIP image processor, and every kind of bad input.

Tolerance: exact (bit-identical float32) wherever the reference defines the result; the two documented
exceptions are extreme aspect ratios (crop-only resize, within 3 of 255 levels) and draft mode.
All fixtures are made here with Pillow and numpy.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from transformers import CLIPImageProcessorPil

from embedder_service.models.bundle import CLIP_MEAN, CLIP_STD
from embedder_service.preprocess import Decoded, ImageError, PreprocessSpec, _request_draft, decode

SPEC = PreprocessSpec()
# One level of 8-bit input, in normalized units.
LEVEL = 1 / 255 / min(CLIP_STD)


@pytest.fixture(scope="module")
def reference() -> CLIPImageProcessorPil:
    # transformers 5's CLIPImageProcessor falls back to exactly this class when torchvision is absent.
    return CLIPImageProcessorPil()


def expected(reference: CLIPImageProcessorPil, im: Image.Image) -> np.ndarray:
    return reference(images=im, return_tensors="np")["pixel_values"][0]


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture and noise: something bicubic resizing really has to work on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([x / max(width, 1), y / max(height, 1), 0.5 + 0.5 * np.sin(x / 7 + y / 11)], axis=-1)
    noisy = base * 200 + rng.normal(0, 25, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def check_exact(reference: CLIPImageProcessorPil, data: bytes, spec: PreprocessSpec = SPEC) -> Decoded:
    out = decode(data, spec)
    assert out.pixels.dtype == np.float32 and out.pixels.flags.c_contiguous
    assert out.pixels.shape == (3, spec.image_size, spec.image_size)
    np.testing.assert_array_equal(out.pixels, expected(reference, Image.open(io.BytesIO(data))))
    return out


SIZES = [(1, 1), (5, 300), (300, 5), (223, 225), (224, 224), (225, 224), (301, 251), (250, 300),
         (640, 480), (481, 641), (1001, 999), (2000, 1500)]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_sizes_match_reference_exactly(reference: CLIPImageProcessorPil, width: int, height: int) -> None:
    out = check_exact(reference, encode(Image.fromarray(photo(width, height))))
    assert (out.width, out.height, out.content_type) == (width, height, "image/png")


def rgba(width: int = 97, height: int = 61) -> Image.Image:
    alpha = np.linspace(0, 255, width * height).reshape(height, width, 1).astype(np.uint8)
    return Image.fromarray(np.concatenate([photo(width, height), alpha], axis=-1))


def mode_files() -> dict[str, bytes]:
    """One file per pixel mode and transparency flavour the decoder must handle."""
    rgb = Image.fromarray(photo(97, 61))
    grey = rgb.convert("L")
    few_colours = rgb.quantize(8).convert("RGB")
    return {
        "RGB": encode(rgb),
        "RGBA": encode(rgba()),
        "LA": encode(rgba().convert("LA")),
        "L": encode(grey),
        "L+tRNS": encode(grey, transparency=128),
        "RGB+tRNS": encode(few_colours, transparency=few_colours.getpixel((0, 0))),
        "P": encode(rgb.quantize(64)),
        "P+tRNS": encode(rgb.quantize(64), transparency=5),
        "1": encode(grey.convert("1")),
        "CMYK-JPEG": encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "L-JPEG": encode(grey, "JPEG"),
        "RGB-JPEG": encode(rgb, "JPEG", quality=90),
        "GIF+transparency": encode(rgb.quantize(32), "GIF", transparency=3),
        "WEBP-RGBA": encode(rgba(), "WEBP", lossless=True),
        "WEBP-lossy": encode(rgb, "WEBP", quality=80),
        "BMP": encode(rgb, "BMP"),
        "TIFF-RGBA": encode(rgba(), "TIFF"),
        "TIFF-CMYK": encode(rgb.convert("CMYK"), "TIFF"),
    }


MODE_FILES = mode_files()


@pytest.mark.parametrize("name", list(MODE_FILES))
def test_modes_match_reference_exactly(reference: CLIPImageProcessorPil, name: str) -> None:
    out = check_exact(reference, MODE_FILES[name])
    assert (out.width, out.height) == (97, 61)


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    out = decode(encode(clear), SPEC, thumbnail_size=32)
    white = (1 - np.asarray(SPEC.mean, np.float32)) / np.asarray(SPEC.std, np.float32)
    np.testing.assert_allclose(out.pixels[:, 0, 0], white, rtol=1e-6)
    assert Image.open(io.BytesIO(out.thumbnail)).getpixel((0, 0)) >= (250, 250, 250)


def test_other_image_size(reference: CLIPImageProcessorPil) -> None:
    spec = PreprocessSpec(image_size=336)
    ref336 = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    data = encode(Image.fromarray(photo(500, 377)))
    np.testing.assert_array_equal(decode(data, spec).pixels, expected(ref336, Image.open(io.BytesIO(data))))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(reference: CLIPImageProcessorPil, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(photo(320, 240)), "JPEG", exif=exif.tobytes())
    out = decode(data, SPEC)
    assert (out.width, out.height) == ((320, 240) if orientation == 3 else (240, 320))
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(out.pixels, expected(reference, upright))


def grey_levels() -> np.ndarray:
    return photo(120, 90)[..., 1]


def test_16bit_png_is_scaled_not_clipped(reference: CLIPImageProcessorPil) -> None:
    # The same picture stored with 16 bits per sample must give what its 8-bit version gives.
    data = encode(Image.fromarray(grey_levels().astype(np.uint16) * 257))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = decode(data, SPEC)
    np.testing.assert_array_equal(out.pixels, expected(reference, Image.fromarray(grey_levels())))
    assert out.pixels.std() > 0.5, "clipping to 255 would make it flat white"


@pytest.mark.parametrize(
    "values",
    [
        grey_levels().astype(np.float32) / 255,  # float in [0, 1]
        grey_levels().astype(np.int32) * 257,  # 32-bit integers holding 16-bit data
    ],
    ids=["F", "I"],
)
def test_float_and_int32_tiff_are_scaled(reference: CLIPImageProcessorPil, values: np.ndarray) -> None:
    out = decode(encode(Image.fromarray(values), "TIFF"), SPEC)
    np.testing.assert_array_equal(out.pixels, expected(reference, Image.fromarray(grey_levels())))


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(photo(80, 60, seed)) for seed in range(3)]
    frames[1:] = [Image.fromarray(255 - np.asarray(f)) for f in frames[1:]]
    if fmt == "GIF":
        frames = [f.quantize(64) for f in frames]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                  **({"lossless": True} if fmt == "WEBP" else {}))


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_uses_first_frame(reference: CLIPImageProcessorPil, fmt: str) -> None:
    data = animated(fmt)
    first = Image.open(io.BytesIO(data))
    assert getattr(first, "n_frames", 1) == 3
    np.testing.assert_array_equal(decode(data, SPEC).pixels, expected(reference, first))


def test_extreme_aspect_ratio_stays_close(reference: CLIPImageProcessorPil) -> None:
    # A 3x512 strip would need a 224x38229 intermediate; only the crop's region is resampled. Pillow's
    # full-length resize itself drifts from true bicubic there (by up to ~7 levels on noise, measured),
    # so the bound on the worst pixel is loose; a wrong crop offset would miss both bounds by far.
    strip = Image.fromarray(photo(3, 512))
    difference = np.abs(decode(encode(strip), SPEC).pixels - expected(reference, strip)) / LEVEL
    assert difference.mean() < 0.5 and difference.max() < 8


def test_thumbnail(reference: CLIPImageProcessorPil) -> None:
    out = decode(encode(Image.fromarray(photo(400, 300)), "JPEG"), SPEC, thumbnail_size=128)
    thumb = Image.open(io.BytesIO(out.thumbnail))
    assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", (128, 96))
    small = decode(encode(Image.new("L", (40, 20), 99)), SPEC, thumbnail_size=128)
    assert Image.open(io.BytesIO(small.thumbnail)).size == (40, 20), "small images are not enlarged"
    assert decode(encode(Image.new("L", (40, 20))), SPEC).thumbnail is None


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif"),
     ("BMP", "image/bmp"), ("TIFF", "image/tiff")],
)
def test_content_type(fmt: str, content_type: str) -> None:
    assert decode(encode(Image.fromarray(photo(30, 20)), fmt), SPEC).content_type == content_type


def test_multi_picture_jpeg_from_phone_cameras_is_a_jpeg(reference: CLIPImageProcessorPil) -> None:
    pictures = [Image.fromarray(photo(64, 48, seed)) for seed in range(2)]
    data = encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert check_exact(reference, data).content_type == "image/jpeg"


def png_header_only(width: int, height: int, bit_depth: int = 1, colour: int = 0) -> bytes:
    """A valid PNG of the given size whose rows are all zero: huge dimensions, a few hundred KB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)
    packer = zlib.compressobj(9)
    rows = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def gif_with_screen(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen size in the header
    return bytes(data)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


JPEG = encode(Image.fromarray(photo(200, 150)), "JPEG")
PNG = encode(Image.fromarray(photo(200, 150)))
BAD_INPUTS = {
    "empty": (b"", "empty"),
    "text": (b"just some words\n", "unsupported format (text)"),
    "html": (b"<!DOCTYPE html><html><body>hi</body></html>", "unsupported format (HTML)"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "unsupported format (SVG"),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "unsupported format (a PDF document)"),
    "zip": (zip_bytes(), "unsupported format (a zip archive)"),
    "ico": (encode(Image.new("RGB", (16, 16)), "ICO"), "unsupported format (an icon file)"),
    "binary": (bytes(range(256)) * 4, "unsupported format"),
    "truncated jpeg": (truncated(JPEG), "truncated"),
    "truncated png": (truncated(PNG), "truncated"),
    "corrupt jpeg header": (JPEG[:3] + b"\x00" * 40, "corrupt JPEG header"),
    "corrupt png header": (PNG[:16] + b"\xff" * 30, "corrupt PNG header"),
    "png bomb": (png_header_only(30_000, 30_000), "too many pixels"),
    "png over cap": (png_header_only(8_000, 6_000), "over the limit of 40000000 pixels"),
    "gif bomb": (gif_with_screen(65_535, 65_535), "too many pixels"),
    "gif over cap": (gif_with_screen(7_000, 7_000), "over the limit"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_a_clear_image_error(name: str) -> None:
    data, message = BAD_INPUTS[name]
    with pytest.raises(ImageError, match=None) as caught:
        decode(data, SPEC)
    assert message in str(caught.value)


def test_limits_are_configurable() -> None:
    with pytest.raises(ImageError, match="over the limit of 1000 pixels"):
        decode(PNG, PreprocessSpec(max_pixels=1000))
    with pytest.raises(ImageError, match="bytes"):
        decode(PNG, PreprocessSpec(max_bytes=100))


def test_truncated_images_are_not_grey_filled() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about each damaged tag it skips
def test_mutated_files_only_raise_image_error() -> None:
    rng = random.Random(0)
    sources = [JPEG, PNG, animated("GIF"), encode(rgba(), "WEBP"), encode(Image.fromarray(photo(40, 30)), "TIFF"),
               encode(Image.fromarray(photo(40, 30)), "BMP")]
    for source in sources:
        for _ in range(60):
            data = bytearray(source[: rng.randrange(1, len(source) + 1)])
            for _ in range(rng.randint(0, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                decode(bytes(data), SPEC, thumbnail_size=16)
            except ImageError:
                pass


def test_draft_request_covers_crop_and_thumbnail() -> None:
    data = encode(Image.fromarray(photo(1000, 800)), "JPEG")
    with Image.open(io.BytesIO(data)) as im:
        _request_draft(im, 224, 0)
        assert im.size == (500, 400), "800 // 4 < 224, so half scale is the coarsest allowed"
    with Image.open(io.BytesIO(data)) as im:
        _request_draft(im, 224, 600)
        assert im.size == (1000, 800), "a 600-pixel thumbnail needs more than half of 1000"
    with Image.open(io.BytesIO(PNG)) as im:
        _request_draft(im, 10, 0)
        assert im.size == (200, 150)


def test_draft_decode_is_close_and_keeps_metadata() -> None:
    data = encode(Image.fromarray(photo(2400, 1800)), "JPEG", quality=92)
    exact = decode(data, SPEC, thumbnail_size=256)
    draft = decode(data, PreprocessSpec(draft=True), thumbnail_size=256)
    assert (draft.width, draft.height) == (exact.width, exact.height) == (2400, 1800)
    assert Image.open(io.BytesIO(draft.thumbnail)).size == Image.open(io.BytesIO(exact.thumbnail)).size
    difference = np.abs(draft.pixels - exact.pixels)
    assert 0 < difference.mean() < 4 * LEVEL


def test_draft_geometry_holds_for_every_orientation() -> None:
    # 1003 is odd, so the decoder's last half-scale column is partial; transposing moves it to the
    # left or top, and the draft path must still sample the same picture area as the exact one.
    rng = np.random.default_rng(3)
    blocks = np.kron(rng.integers(0, 256, (30, 42, 3), dtype=np.uint8), np.ones((25, 25, 1), np.uint8))
    sharp = Image.fromarray(blocks[:701, :1003])
    differences = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(sharp, "JPEG", quality=95, exif=exif.tobytes())
        exact, draft = decode(data, SPEC), decode(data, PreprocessSpec(draft=True))
        differences.append(float(np.abs(draft.pixels - exact.pixels).mean()) / LEVEL)
    assert max(differences) < 2.0 and max(differences) < 1.05 * min(differences), differences



@pytest.mark.parametrize(("width", "height"), [(640, 480), (301, 251), (5, 300), (224, 224)])
def test_squash_matches_siglip_reference_exactly(width: int, height: int) -> None:
    # SigLIP's rule: both sides to the size (no crop), bicubic, mean = std = 0.5.
    from transformers import SiglipImageProcessorPil

    siglip = SiglipImageProcessorPil()
    data = encode(Image.fromarray(photo(width, height, seed=3)))
    spec = PreprocessSpec(image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="squash")
    want = siglip(images=Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"][0]
    # SigLIP rescales and normalizes in float32 where CLIP's processor rescales in float64: one ulp apart.
    np.testing.assert_allclose(decode(data, spec).pixels, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("interpolation", ["bilinear", "lanczos", "nearest"])
def test_interpolation_by_name(interpolation: str) -> None:
    im = Image.fromarray(photo(300, 200, seed=5))
    spec = PreprocessSpec(image_size=64, resize="squash", interpolation=interpolation)
    resample = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS,
                "nearest": Image.Resampling.NEAREST}[interpolation]
    levels = np.asarray(im.resize((64, 64), resample)).astype(np.float32) / 255
    want = ((levels - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)).transpose(2, 0, 1)
    np.testing.assert_allclose(decode(encode(im), spec).pixels, want, atol=1e-5)
