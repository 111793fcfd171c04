"""Re-embedding against the embedder's own throughput, in the same run.

`python -m bench.reembed [--images 600] [--preset tiny]`: starts the index (embedded Postgres) and the
embedder (a random bundle of the preset, 512 dimensions) as processes, stores the images in the default
collection with 256-dimensional vectors of a pretend old model, then measures
  1. the embedder alone: every image streamed through StreamEmbedImages (the ceiling of any re-embed);
  2. `loader reembed` into a new collection: page, read originals and thumbnails, embed, upsert, swap.
Both are measured twice, alternating, so a shared machine's background load hits both alike. The
number that matters is the ratio (target >= 0.85). Writes bench/results/reembed.json.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import free_port, machine, table, write
from bench.embedder import CACHE, caltech_like
from bench.loader import embedder_rate, serve
from embedder_service.models import export
from loader.reembed import Reembed, ReembedConfig
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common import channels

OLD_MODEL, OLD_DIM = "random-old@0", 256


def store_old(addr: str, datas: list[bytes]) -> None:
    """The images in the default collection, each with a random vector of the old model."""
    rng = np.random.default_rng(0)
    stub = index_pb2_grpc.IndexStub(channels.channel(addr))
    for start in range(0, len(datas), 100):
        items = []
        for data in datas[start:start + 100]:
            v = rng.standard_normal(OLD_DIM).astype(np.float32)
            items.append(index_pb2.UpsertItem(
                sha256=hashlib.sha256(data).hexdigest(), original=data, content_type="image/jpeg",
                thumbnail=data[:2000], label="bench", source="bench", file_name="x.jpg",
                embedding=(v / np.linalg.norm(v)).tolist(), model_id=OLD_MODEL))
        stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=120)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Both modes, alternating; returns the rows and the ratio."""
    bundle_dir = export.cached_random_bundle(CACHE, preset=args.preset)
    datas = caltech_like(args.images)
    e_port, i_port = free_port(), free_port()
    procs = [serve("embedder_service", {"EMBEDDER_MODEL_DIR": str(bundle_dir), "EMBEDDER_PORT": str(e_port),
                                        "EMBEDDER_PROVIDER": "cpu"}, e_port, work / "embedder.log"),
             serve("index_service", {"INDEX_DATA_DIR": str(work / "index"), "INDEX_PORT": str(i_port),
                                     "INDEX_DIM": str(OLD_DIM), "INDEX_LOG_LEVEL": "WARNING"},
                   i_port, work / "index.log")]
    e_addr, i_addr = f"127.0.0.1:{e_port}", f"127.0.0.1:{i_port}"
    rows: list[dict[str, Any]] = []
    try:
        store_old(i_addr, datas)
        embedder_rate(e_addr, datas[:64], args.batch, 0)  # warm-up
        for r in range(2):
            seconds = embedder_rate(e_addr, datas, args.batch, 0)
            rows.append({"round": r, "mode": "embedder alone", "images": len(datas),
                         "seconds": seconds, "images_per_s": len(datas) / seconds})
            cfg = ReembedConfig(index_addr=i_addr, embedder_addr=e_addr, target=f"new{r}",
                                source="c1", alias="", batch_size=args.batch, progress_s=3600)
            started = time.perf_counter()
            out = Reembed(cfg).run()
            seconds = time.perf_counter() - started
            assert out.embedded == len(datas) and out.failed == 0, out
            rows.append({"round": r, "mode": "loader reembed", "images": out.embedded,
                         "seconds": seconds, "images_per_s": out.embedded / seconds})
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    alone = sum(r["images_per_s"] for r in rows if r["mode"] == "embedder alone") / 2
    reembed = sum(r["images_per_s"] for r in rows if r["mode"] == "loader reembed") / 2
    return {"machine": machine(), "preset": args.preset, "batch": args.batch, "rows": rows,
            "embedder_images_per_s": alone, "reembed_images_per_s": reembed, "ratio": reembed / alone}


def main() -> None:
    """Run, print the table and the ratio, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--preset", default="tiny", help="random bundle preset (tiny, vit-b-32, …)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-reembed-"))
    try:
        result = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result["rows"], ["round", "mode", "images", "seconds", "images_per_s"]))
    print(f"\nre-embed / embedder alone: {result['ratio']:.2f} (target >= 0.85)")
    print(f"wrote {write('reembed', result)}")


if __name__ == "__main__":
    main()
