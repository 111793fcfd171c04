"""What the display rendition saves: a 12 MP phone JPEG against its 1600 px rendition, bytes and time.

`python -m bench.renditions [--width 4000 --height 3000]` makes a photo-like JPEG (quality 90, EXIF
orientation 6, about 2.8 MB at 12 MP, the size the issue names), then times index_service.renditions'
make_display on it (what the first view of an image costs the index, once) against reading the kept
file (every later view). Writes bench/results/renditions.json.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import RESULTS, machine, table
from index_service.renditions import DISPLAY_SIDE, QUALITY, make_display
from tests.support.photos import photo_jpeg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "renditions.json")
    args = parser.parse_args()
    original = photo_jpeg(args.width, args.height, orientation=6, quality=90)
    make_s, shown = [], b""
    for _ in range(args.rounds):
        started = time.perf_counter()
        shown = make_display(original) or b""
        make_s.append(time.perf_counter() - started)
    kept = Path("/tmp") / f"bench-rendition-{time.time_ns()}.jpg"
    kept.write_bytes(shown)
    started = time.perf_counter()
    for _ in range(20):
        kept.read_bytes()
    read_s = (time.perf_counter() - started) / 20
    kept.unlink()
    with Image.open(io.BytesIO(shown)) as image:
        size = image.size
    r = {"original_pixels": f"{args.width}x{args.height}", "original_bytes": len(original),
         "display_pixels": f"{size[0]}x{size[1]}", "display_bytes": len(shown), "ratio": len(shown) / len(original),
         "make_ms_median": float(np.median(make_s) * 1000), "read_kept_ms": read_s * 1000,
         "side": DISPLAY_SIDE, "quality": QUALITY}
    rows = [{"file": "original (EXIF orientation 6)", "pixels": r["original_pixels"],
             "bytes": f"{len(original):,}", "ms": ""},
            {"file": "display rendition, made (first view)", "pixels": r["display_pixels"],
             "bytes": f"{len(shown):,}", "ms": f"{r['make_ms_median']:.0f}"},
            {"file": "display rendition, kept (later views)", "pixels": r["display_pixels"],
             "bytes": f"{len(shown):,}", "ms": f"{r['read_kept_ms']:.2f}"}]
    print(table(rows, list(rows[0])))
    print(f"rendition / original = {r['ratio']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), **r}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
