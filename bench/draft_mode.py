"""JPEG draft mode (DCT-scaled decoding) against exact decoding: time, pixel difference, embedding cosine.

    python -m bench.draft_mode [--bundle DIR] [--repeat N] [--thumbnail PX]

Photos are scikit-image's bundled real photographs, JPEG-encoded at their own size, at a Caltech-like
size (longest side 300, real pixels, downscaled) and bicubically upscaled to about 3 and 12 MP. The
upscaled ones are marked: they hold no detail finer than the original, which flatters draft mode, so
the decision uses the real-resolution photos only. With --bundle (a directory with image.onnx) each
pair is embedded with onnxruntime on CPU and the cosine of exact vs draft decides: keep draft on by
default if the lowest cosine over real photos decoded in draft is at least 0.995.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import machine, table, write
from embedder_service.preprocess import PreprocessSpec, _request_draft, decode

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
          "stereo_motorcycle", "camera"]
UPSCALED_MEGAPIXELS = (3, 12)
THRESHOLD = 0.995
QUALITY = 90


def load_photos() -> dict[str, np.ndarray]:
    """The real photographs skimage ships (those it can load offline), as uint8 arrays."""
    from skimage import data

    photos = {}
    for name in PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception as exc:  # some files of skimage.data need a download: skip those
            print(f"skipping {name}: {exc}")
            continue
        photos[name] = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
    return photos


def variants(name: str, array: np.ndarray) -> list[tuple[str, bool, bytes]]:
    """(label, upscaled, JPEG bytes) of one photo at its own, a Caltech-like and two upscaled sizes."""
    im = Image.fromarray(array)
    out = [(f"{name}", False, _jpeg(im))]
    small = 300 / max(im.size)
    if small < 1:
        caltech = im.resize((round(im.width * small), round(im.height * small)), Image.Resampling.LANCZOS)
        out.append((f"{name}@300", False, _jpeg(caltech)))
    for megapixels in UPSCALED_MEGAPIXELS:
        factor = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
        if factor > 1:
            big = im.resize((round(im.width * factor), round(im.height * factor)), Image.Resampling.BICUBIC)
            out.append((f"{name}@{megapixels}MP", True, _jpeg(big)))
    return out


def _jpeg(im: Image.Image) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=QUALITY)
    return buffer.getvalue()


def draft_scale(data: bytes, spec: PreprocessSpec, thumbnail: int) -> int:
    """The DCT scale decode() asks for (1 = full size)."""
    with Image.open(io.BytesIO(data)) as im:
        width = im.width
        _request_draft(im, spec.image_size, thumbnail)
        return round(width / im.width)


def paired_ms(first: Callable[[], object], second: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median milliseconds of two calls timed alternately, so background load hits both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, times in ((first, samples[0]), (second, samples[1])):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(samples[0]) * 1000, statistics.median(samples[1]) * 1000


def measure(label: str, upscaled: bool, data: bytes, spec: PreprocessSpec, thumbnail: int,
            repeat: int) -> dict[str, Any]:
    """One row: sizes, times of both paths (warmed up, interleaved), pixel differences."""
    draft_spec = replace(spec, draft=True)
    exact, draft = decode(data, spec, thumbnail), decode(data, draft_spec, thumbnail)
    exact_ms, draft_ms = paired_ms(lambda: decode(data, spec, thumbnail), lambda: decode(data, draft_spec, thumbnail),
                                   repeat)
    # In 8-bit levels: one level is 1/255 of the range before normalization.
    levels = np.abs(exact.pixels - draft.pixels) * np.asarray(spec.std, np.float32)[:, None, None] * 255
    return {
        "image": label, "size": f"{exact.width}x{exact.height}", "megapixels": exact.width * exact.height / 1e6,
        "upscaled": upscaled, "scale": draft_scale(data, spec, thumbnail), "exact_ms": exact_ms,
        "draft_ms": draft_ms, "speedup": exact_ms / draft_ms, "max_levels": float(levels.max()),
        "mean_levels": float(levels.mean()), "_pixels": (exact.pixels, draft.pixels),
    }


def embed_cosines(bundle_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Add the exact-vs-draft cosine of each row's embeddings from the bundle's image graph."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle_dir / "image.onnx"), providers=["CPUExecutionProvider"])
    for row in rows:
        pair = np.stack(row["_pixels"])
        a, b = session.run(["image_embeds"], {"pixel_values": pair})[0].astype(np.float64)
        row["cosine"] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def spec_for(bundle_dir: Path | None) -> tuple[PreprocessSpec, str]:
    """The bundle's preprocessing when it has a model.json, else CLIP's defaults."""
    if bundle_dir is None or not (bundle_dir / "model.json").is_file():
        return PreprocessSpec(), ""
    from embedder_service.models import bundle

    b = bundle.load(bundle_dir)
    note = "" if b.semantic else f"{b.model_id} has random weights: its cosines say nothing about meaning"
    return PreprocessSpec(b.image_size, b.mean, b.std, resize=b.image.resize, interpolation=b.image.interpolation), note


def summarize(rows: list[dict[str, Any]], with_cosine: bool, note: str) -> dict[str, Any]:
    """Per group (real / upscaled) of rows that really used draft: speed-up and worst differences."""
    summary: dict[str, Any] = {}
    for group, upscaled in (("real", False), ("upscaled", True)):
        used = [r for r in rows if r["upscaled"] == upscaled and r["scale"] > 1]
        if not used:
            continue
        summary[group] = {
            "images": len(used),
            "median_speedup": statistics.median(r["speedup"] for r in used),
            "max_levels": max(r["max_levels"] for r in used),
            "mean_levels": statistics.mean(r["mean_levels"] for r in used),
        }
        if with_cosine:
            summary[group]["min_cosine"] = min(r["cosine"] for r in used)
    if not with_cosine:
        summary["decision"] = "undecided: no --bundle given, so no embedding cosine was measured"
    elif "real" not in summary:
        summary["decision"] = "undecided: no real photo was large enough for draft decoding"
    else:
        keep = summary["real"]["min_cosine"] >= THRESHOLD
        summary["decision"] = (f"draft {'on' if keep else 'off'} by default: lowest cosine on real photos "
                               f"{summary['real']['min_cosine']:.5f} {'>=' if keep else '<'} {THRESHOLD}")
        if note:
            summary["decision"] = f"not a basis for the default ({note}); the rule would say: {summary['decision']}"
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle directory with image.onnx (pixel_values -> image_embeds)")
    parser.add_argument("--repeat", type=int, default=9, help="timed decodes per image and path (median)")
    parser.add_argument("--thumbnail", type=int, default=256, help="thumbnail longest side made by both paths")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="skimage")
    spec, note = spec_for(args.bundle)

    rows = [measure(label, upscaled, data, spec, args.thumbnail, args.repeat)
            for name, array in load_photos().items() for label, upscaled, data in variants(name, array)]
    if args.bundle is not None:
        embed_cosines(args.bundle, rows)
    for row in rows:
        del row["_pixels"]
    columns = ["image", "size", "megapixels", "upscaled", "scale", "exact_ms", "draft_ms", "speedup",
               "max_levels", "mean_levels"] + (["cosine"] if args.bundle else [])
    print(table([{**r, "cosine": f"{r['cosine']:.5f}"} if "cosine" in r else r for r in rows], columns))
    summary = summarize(rows, args.bundle is not None, note)
    for group, numbers in summary.items():
        print(f"{group}: {numbers}")
    if note:
        print(f"note: {note}")
    path = write("draft_mode", {
        "machine": machine(), "bundle": str(args.bundle) if args.bundle else None, "note": note,
        "image_size": spec.image_size, "thumbnail": args.thumbnail, "jpeg_quality": QUALITY,
        "threshold": THRESHOLD, "rows": rows, "summary": summary,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
