"""Embedder throughput and latency against the PyTorch reference, on a random ViT-B/32 bundle.

`python -m bench.embedder [--quick]`: builds (once, cached) the exact-shape random bundles in fp32
and int8, serves each in process over gRPC and measures, in the same run: images/s from JPEG bytes
at batch 1/8/32 and with 1/2/4/8/16 concurrent single-image clients, the model alone on pre-decoded
pixels, short-text latency (with every sample kept for the report's distributions), and the same model
in PyTorch/transformers on the same inputs (batches, and the same numbers of threads each embedding one
image at a time). Then, head to head with the engines interleaved round by round (`--rounds`): one
client's single-image latency and images/s from 1, 4 and 8 single-image clients, with the int8 / fp32,
int8 / PyTorch and fp32 / PyTorch ratios per client count; with `--immich PATH --venv VENV` immich's
machine-learning service joins them (same fp32 weights, see bench/peer_immich.py) with ours / immich.
Writes bench/results/embedder.json.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from bench.common import machine, numpy_matmul_gflops, percentiles, rate, table, write
from bench.interleave import Call, describe, interleaved, latencies, ratios, threads_rate
from embedder_service.config import EmbedderConfig
from embedder_service.engine import Engine
from embedder_service.model import ClipModel
from embedder_service.models import bundle, export
from embedder_service.preprocess import PreprocessSpec, decode
from embedder_service.server import create_server
from embedder_service.tests import images
from embedder_service.tokenizer import TextTokenizer
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench-bundles"
CONCURRENCY = (1, 2, 4, 8, 16)
HEAD_TO_HEAD = (1, 4, 8)  # client counts of the interleaved comparison (issue 14: 1 client, 4 and 8)
QUERIES = ["a dog on a beach", "a red car", "two people riding bicycles", "a bowl of soup",
           "an airplane in the sky", "a cat sleeping on a sofa", "mountains at sunset", "a guitar"]


def vit_b32_image_gflop() -> float:
    """Multiply-adds of the ViT-B/32 image tower at 224 px, counted from its shapes, as GFLOP (2 per MAC)."""
    tokens, width, layers, mlp, patch = 50, 768, 12, 3072, 32
    per_layer = tokens * width * 3 * width + 2 * tokens * tokens * width + tokens * width * width \
        + 2 * tokens * width * mlp
    macs = 49 * width * 3 * patch * patch + layers * per_layer + width * 512
    return 2 * macs / 1e9


def caltech_like(count: int) -> list[bytes]:
    """JPEGs of Caltech-256's typical size (about 300x250, varied), from real photos where available."""
    sources = _real_photos() or [images.photo(640, 480, seed=s) for s in range(6)]
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        w, h = int(rng.integers(240, 360)), int(rng.integers(200, 300))
        img = sources[i % len(sources)].resize((w, h), Image.Resampling.BICUBIC)
        out.append(images.encode(img, "JPEG", quality=int(rng.integers(75, 95))))
    return out


def large_photos(count: int) -> list[bytes]:
    """3 to 12 megapixel JPEGs (real photos upscaled: decode cost is what matters here)."""
    sources = _real_photos() or [images.photo(640, 480, seed=s) for s in range(6)]
    sizes = [(2048, 1536), (3000, 2000), (4000, 3000)]
    return [images.encode(sources[i % len(sources)].resize(sizes[i % 3], Image.Resampling.BICUBIC), "JPEG", quality=90)
            for i in range(count)]


def _real_photos() -> list[Image.Image]:
    try:
        from skimage import data
    except ImportError:
        return []
    names = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry")
    return [Image.fromarray(getattr(data, n)()).convert("RGB") for n in names if hasattr(data, n)]


def measure_ours(bundle_dir: Path, caltech: list[bytes], large: list[bytes], threads: int,
                 min_s: float) -> dict[str, Any]:
    """Our service over gRPC, plus the bare model on pre-decoded pixels."""
    with serving(bundle_dir, threads) as (model, stub):
        spec = PreprocessSpec()
        pixels = np.stack([decode(d, spec).pixels for d in caltech[:32]])
        model.embed_pixels(pixels[:8])
        out: dict[str, Any] = {"predecoded_b32": rate(32, lambda: model.embed_pixels(pixels), min_s)}
        for batch in (1, 8, 32):
            out[f"jpeg_b{batch}"] = _grpc_rate(stub, caltech, batch, min_s)
        out["large_b8"] = _grpc_rate(stub, large, 8, min_s)
        out["jpeg_clients"] = {str(c): _concurrent_rate(stub, caltech, c, min_s) for c in CONCURRENCY}
        out["jpeg_8_clients"] = out["jpeg_clients"]["8"]
        out.update(_text_latency(stub, min_s))
        out["providers"] = model.providers
    return out


@contextmanager
def serving(bundle_dir: Path, threads: int) -> Iterator[tuple[ClipModel, embedder_pb2_grpc.EmbedderStub]]:
    """The bundle served in process over gRPC on a free port, and a stub to call it."""
    config = EmbedderConfig(port=0, max_batch=32, max_images_per_request=64)
    model = ClipModel(bundle.load(bundle_dir), "cpu", threads, config.spin_us)
    server = create_server(config, Engine(model, config))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}",
                                    options=[("grpc.max_receive_message_length", 256 << 20)])
    try:
        yield model, embedder_pb2_grpc.EmbedderStub(channel)
    finally:
        channel.close()
        server.stop(1)


def _grpc_rate(stub: embedder_pb2_grpc.EmbedderStub, datas: list[bytes], batch: int, min_s: float) -> float:
    chunks = [datas[i:i + batch] for i in range(0, len(datas) - batch + 1, batch)]
    requests = [embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=d) for d in c])
                for c in chunks]
    stub.EmbedImages(requests[0], timeout=120)
    state = {"i": 0}

    def one() -> None:
        stub.EmbedImages(requests[state["i"] % len(requests)], timeout=120)
        state["i"] += 1

    return rate(batch, one, min_s)


def _concurrent_rate(stub: embedder_pb2_grpc.EmbedderStub, datas: list[bytes], clients: int, min_s: float) -> float:
    """Images/s of `clients` threads each sending single-image requests back to back for min_s."""
    requests = [embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=d)]) for d in datas]
    return threads_rate(clients, min_s, lambda i: stub.EmbedImages(requests[i % len(requests)], timeout=120))


def _text_latency(stub: embedder_pb2_grpc.EmbedderStub, min_s: float) -> dict[str, Any]:
    for q in QUERIES:
        stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=[q]), timeout=30)
    samples: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < max(min_s, 1.0) or len(samples) < 50:
        q = QUERIES[len(samples) % len(QUERIES)]
        t = time.perf_counter()
        stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=[q]), timeout=30)
        samples.append(time.perf_counter() - t)
    batch = embedder_pb2.EmbedTextsRequest(texts=QUERIES * 8)
    texts_per_s = rate(len(batch.texts), lambda: stub.EmbedTexts(batch, timeout=60), min_s)
    lat = percentiles(samples)
    return {"text_p50_ms": lat["p50_ms"], "text_p99_ms": lat["p99_ms"], "texts_per_s_b64": texts_per_s,
            "text_samples_ms": [round(x * 1000, 3) for x in samples]}


def torch_reference(threads: int) -> tuple[Any, Callable[[list[bytes]], None]]:
    """The random ViT-B/32 in PyTorch/transformers, and a function embedding JPEGs with its own processor."""
    import torch
    from transformers import CLIPImageProcessor

    torch.set_num_threads(threads)
    model = export.random_clip("vit-b-32", seed=0)
    processor = CLIPImageProcessor()

    def images_fn(datas: list[bytes]) -> None:
        pil = [Image.open(io.BytesIO(d)).convert("RGB") for d in datas]
        pixels = processor(images=pil, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            model.get_image_features(pixel_values=pixels)

    return model, images_fn


def measure_head_to_head(caltech: list[bytes], threads: int, min_s: float, rounds: int,
                         bundle_dirs: dict[str, Path], immich: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """Ours in each precision and PyTorch (and immich's service: its checkout and venv python) on single-image
    requests: 1 client's latency and 1/4/8 clients' images/s, interleaved round by round so that the ratios
    compare moments, not minutes, of a shared machine."""
    _, torch_fn = torch_reference(threads)
    with ExitStack() as stack:
        callers: dict[str, Call] = {}
        for precision, bundle_dir in bundle_dirs.items():
            _, stub = stack.enter_context(serving(bundle_dir, threads))
            requests = [embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=d)]) for d in caltech]
            callers[f"ours {precision}"] = partial(_one_image, stub, requests)
        callers["PyTorch fp32"] = lambda i: torch_fn([caltech[i % len(caltech)]])
        if immich is not None:
            from bench import peer_immich  # it imports this module: loaded only when asked for

            fp32 = export.cached_random_bundle(CACHE, "vit-b-32", "fp32")
            port = stack.enter_context(peer_immich.immich_serving(*immich, fp32))
            callers["immich"] = peer_immich.immich_caller(port, caltech)
        samples = interleaved(callers, HEAD_TO_HEAD, rounds, min_s)
        waits: dict[str, list[float]] = {engine: [] for engine in callers}
        for _ in range(rounds):  # batch-1 latency, one client: where a single search waits
            for engine, call in callers.items():
                waits[engine] += latencies(call, min_s / 2, at_least=10)
    engines = list(callers)
    pairs = [(a, b) for a in engines for b in engines if a != b and a.startswith("ours") and
             (b in ("PyTorch fp32", "immich") or (a, b) == ("ours int8", "ours fp32"))]
    return {"rounds": rounds, "window_s": min_s, "images_per_s": samples,
            "b1_latency": {e: percentiles(w) for e, w in waits.items()},
            "ratios": {f"{a} / {b}": ratios(samples, a, b) for a, b in pairs}}


def _one_image(stub: embedder_pb2_grpc.EmbedderStub, requests: list[embedder_pb2.EmbedImagesRequest],
               i: int) -> object:
    return stub.EmbedImages(requests[i % len(requests)], timeout=120)


def measure_torch(caltech: list[bytes], threads: int, min_s: float, bundle_dir: Path) -> dict[str, Any]:
    """The same random weights in PyTorch/transformers, with transformers' own image processor (bundle_dir: the
    bundle whose tokenizer feeds it)."""
    import torch

    model, images_fn = torch_reference(threads)
    out: dict[str, Any] = {}
    for batch in (1, 8, 32):
        chunk = caltech[:batch]
        images_fn(chunk)
        out[f"jpeg_b{batch}"] = rate(batch, partial(images_fn, chunk), min_s)
    one = caltech[:64]
    out["jpeg_clients"] = {str(c): threads_rate(c, min_s, lambda i: images_fn([one[i % len(one)]]))
                           for c in CONCURRENCY}
    tokenizer = TextTokenizer.of(bundle.load(bundle_dir))
    samples = []
    for i in range(40):
        ids, _ = tokenizer.tokenize(QUERIES[i % len(QUERIES)])
        t = time.perf_counter()
        with torch.inference_mode():
            model.get_text_features(input_ids=torch.tensor([ids]))
        samples.append(time.perf_counter() - t)
    lat = percentiles(samples[5:])
    out["text_p50_ms"], out["text_p99_ms"] = lat["p50_ms"], lat["p99_ms"]
    out["text_samples_ms"] = [round(x * 1000, 3) for x in samples[5:]]
    return out


def main() -> None:
    """Run the comparison, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and shorter timings (a smoke run)")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0 = one per core)")
    parser.add_argument("--precisions", default="fp32,int8", help="bundles to measure")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of the interleaved single-image comparison "
                                                                  "(default 5, quick 2)")
    parser.add_argument("--immich", type=Path, help="immich's machine-learning/ folder: adds immich's service to the "
                                                    "single-image comparison (see bench/peer_immich.py)")
    parser.add_argument("--venv", type=Path, help="with --immich: the virtual environment it runs in")
    args = parser.parse_args()
    immich = None
    if args.immich or args.venv:
        from bench import peer_immich

        python = peer_immich.immich_python(args.immich, args.venv)
        if python is None:
            parser.error(peer_immich.SKIPPED)
        immich = (args.immich, python)
    min_s = 1.0 if args.quick else 6.0
    caltech = caltech_like(64 if args.quick else 128)
    large = large_photos(8 if args.quick else 16)
    threads = args.threads or (__import__("os").cpu_count() or 1)
    result: dict[str, Any] = {"machine": machine(), "numpy_fp32_gflops": numpy_matmul_gflops(),
                    "image_gflop_per_item": vit_b32_image_gflop(), "ours": {}}
    bundle_dirs = {p: export.cached_random_bundle(CACHE, "vit-b-32", p) for p in args.precisions.split(",")}
    for precision, bundle_dir in bundle_dirs.items():
        result["ours"][precision] = measure_ours(bundle_dir, caltech, large, threads, min_s)
    result["torch_fp32"] = measure_torch(caltech, threads, min_s, bundle_dir)
    result["head_to_head"] = measure_head_to_head(caltech, threads, min_s / 2, args.rounds or (2 if args.quick else 5),
                                                  bundle_dirs, immich)
    report(result)
    print(f"\nwrote {write('embedder', result)}")


def report(r: dict[str, Any]) -> None:
    """Print the table and the goal ratios."""
    torch_best = max(r["torch_fp32"][f"jpeg_b{b}"] for b in (1, 8, 32))
    rows = []
    for name, m in [*((f"ours {p}", m) for p, m in r["ours"].items()), ("PyTorch fp32", r["torch_fp32"])]:
        rows.append({
            "engine": name, "b1 img/s": m["jpeg_b1"], "b8 img/s": m["jpeg_b8"], "b32 img/s": m["jpeg_b32"],
            "8 clients img/s": m.get("jpeg_8_clients", ""), "3-12 MP b8 img/s": m.get("large_b8", ""),
            "pre-decoded b32": m.get("predecoded_b32", ""), "text p50 ms": m["text_p50_ms"],
            "text p99 ms": m["text_p99_ms"],
            "GFLOP/s": max(m[f"jpeg_b{b}"] for b in (1, 8, 32)) * r["image_gflop_per_item"],
        })
    print(f"machine: {r['machine']}; numpy fp32 matmul peak {r['numpy_fp32_gflops']:.1f} GFLOP/s; "
          f"ViT-B/32 image tower {r['image_gflop_per_item']:.2f} GFLOP per image")
    print(table(rows, list(rows[0])))
    sweep = [{"engine": name, **{f"{c} clients": m["jpeg_clients"][str(c)] for c in CONCURRENCY}}
             for name, m in [*((f"ours {p}", m) for p, m in r["ours"].items()), ("PyTorch fp32", r["torch_fp32"])]
             if "jpeg_clients" in m]
    if sweep:
        print("\nsingle-image clients, images/s:")
        print(table(sweep, list(sweep[0])))
    goals = {}
    for p, m in r["ours"].items():
        best = max(m[f"jpeg_b{b}"] for b in (1, 8, 32))
        goals[p] = {
            "vs_torch": best / torch_best,
            "jpeg_vs_predecoded": m["jpeg_b32"] / m["predecoded_b32"],
            "8_clients_vs_b32": m["jpeg_8_clients"] / m["jpeg_b32"],
            "fraction_of_numpy_peak": best * r["image_gflop_per_item"] / r["numpy_fp32_gflops"],
        }
        print(f"{p}: {goals[p]['vs_torch']:.2f}x PyTorch fp32 images/s; Caltech JPEG = "
              f"{goals[p]['jpeg_vs_predecoded']:.0%} of pre-decoded; 8 single-image clients = "
              f"{goals[p]['8_clients_vs_b32']:.0%} of batch 32; {goals[p]['fraction_of_numpy_peak']:.0%} "
              f"of the numpy fp32 peak")
    r["ratios"] = goals
    h2h = r.get("head_to_head")
    if h2h:
        print(f"\nsingle-image requests, interleaved ({h2h['rounds']} rounds of {h2h['window_s']:.1f} s windows; "
              "median ratio of the rounds, min-max in brackets):")
        rows = [{"engine": e, "b1 p50 ms": h2h["b1_latency"][e]["p50_ms"], "b1 p99 ms": h2h["b1_latency"][e]["p99_ms"],
                 **{f"{c} clients img/s": float(np.median(h2h["images_per_s"][e][str(c)])) for c in HEAD_TO_HEAD}}
                for e in h2h["images_per_s"]]
        print(table(rows, list(rows[0])))
        for pair, by_clients in h2h["ratios"].items():
            print(describe(pair, by_clients))


if __name__ == "__main__":
    main()
