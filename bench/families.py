"""Per family, real shapes with random weights: images/s and short-text p50, fp32 and int8, in one run.

`python -m bench.families [--quick] [--family NAME ...] [--preset NAME ...]`: builds (once, cached
under .cache/bench-bundles) each family's real-shape bundle in fp32 and int8, checks both against
PyTorch per row (fp32 >= 0.9999, int8 >= 0.99), then measures the model alone as the service runs it
(ONNX Runtime CPU): images/s at batch 8 on preprocessed pixels, and p50/p99 of one short query through
the bundle's tokenizer and text tower. int8/fp32 ratios are the comparison made in the same run.
Writes bench/results/families.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.common import machine, percentiles, rate, table, write
from embedder_service.model import ClipModel
from embedder_service.models import bundle as bundles
from embedder_service.models import families
from embedder_service.models import family_export as fe
from embedder_service.tokenizer import TextTokenizer

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench-bundles"
QUERY = "a dog running on the beach at sunset"
BATCH = 8


def real_presets(names: list[str]) -> list[tuple[str, str]]:
    """(family, preset) of every real shape of the named families."""
    return [(n, p) for n in names for p, s in families.FAMILIES[n].presets.items() if s.real]


def fidelity(name: str, preset: str, fp32: bundles.Bundle, int8: bundles.Bundle) -> dict[str, float]:
    """Worst per-row cosine of both precisions' towers against the PyTorch model."""
    model = families.random_model(name, preset)
    image, text = families.towers(name, model)
    worst = fe.check(fp32, image, text, fe.FP32_FLOOR)
    worst8 = fe.check(int8, image, text, fe.INT8_FLOOR)
    return {"fp32_image": worst["image"], "fp32_text": worst["text"],
            "int8_image": worst8["image"], "int8_text": worst8["text"]}


def measure(found: bundles.Bundle, threads: int, min_s: float) -> dict[str, Any]:
    """Images/s at batch 8 and one query's latency (tokenizer + text tower) of a bundle."""
    model = ClipModel(found, provider="cpu", threads=threads)
    pixels = fe.pixels(BATCH, found.image_size)
    model.embed_pixels(pixels)
    images_s = rate(BATCH, lambda: model.embed_pixels(pixels), min_s)
    tok = TextTokenizer.of(found)
    samples: list[float] = []
    deadline = time.perf_counter() + min_s
    while time.perf_counter() < deadline or len(samples) < 20:
        started = time.perf_counter()
        ids, mask = tok.pad([tok.tokenize(QUERY)[0]])
        model.embed_tokens(ids, mask)
        samples.append(time.perf_counter() - started)
    return {"images_s": images_s, "text": percentiles(samples[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--family", action="append", choices=list(families.FAMILIES),
                        help="only these families (repeatable; default all)")
    parser.add_argument("--preset", action="append", help="only these real presets (repeatable; default all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    min_s = 2.0 if args.quick else 6.0
    rows, results = [], []
    for name, preset in real_presets(args.family or list(families.FAMILIES)):
        if args.preset and preset not in args.preset:
            continue
        started = time.perf_counter()
        fp32 = bundles.load(fe.cached_family_bundle(CACHE, name, preset))
        int8 = bundles.load(fe.cached_family_bundle(CACHE, name, preset, "int8"))
        built_s = time.perf_counter() - started
        worst = fidelity(name, preset, fp32, int8)
        got = {p: measure(b, args.threads, min_s) for p, b in (("fp32", fp32), ("int8", int8))}
        results.append({"family": name, "preset": preset, "dim": fp32.dim, "image_size": fp32.image_size,
                        "languages": list(fp32.languages), "fidelity": worst, "build_s": built_s, **got})
        rows.append({"family": name, "preset": preset, "dim": fp32.dim,
                     "fp32 img/s": f"{got['fp32']['images_s']:.1f}", "int8 img/s": f"{got['int8']['images_s']:.1f}",
                     "int8/fp32": f"{got['int8']['images_s'] / got['fp32']['images_s']:.2f}x",
                     "text p50 fp32": f"{got['fp32']['text']['p50_ms']:.1f} ms",
                     "text p50 int8": f"{got['int8']['text']['p50_ms']:.1f} ms",
                     "min cos int8": f"{min(worst['int8_image'], worst['int8_text']):.4f}"})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, list(rows[0])) if rows else "no families measured")
    summary = {"machine": machine(), "threads": args.threads, "batch": BATCH, "query": QUERY, "results": results}
    print(f"wrote {write('families', summary)}")


if __name__ == "__main__":
    main()
