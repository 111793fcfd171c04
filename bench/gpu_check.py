"""The GPU path, checked and measured in one bounded run: `bench/gpu_check.sh` calls this.

    python -m bench.gpu_check [--dry-run] [--bundle DIR] [--work DIR]

Obtains a random ViT-B/32-shaped fp32 bundle (built with `python -m embedder_service.models random`,
which needs torch, or given with --bundle) and its fp16 variant (`... models fp16`, no torch); checks
that the fp16 vectors match fp32 (cosine >= 0.999 per row on the same pixels and texts) and that the
sessions really run on CUDA (their get_providers()); then measures, through the product's in-process
gRPC server and Engine, images/s from JPEG bytes at batch 1, 32 and 256 and single-text p50, with a
CPU fp32 row measured in the same run for the ratio. Every step has a time limit; one table is printed
and bench/results/gpu_check.json written. --dry-run does it all on the CPU with the tiny preset and
short timings, and marks the GPU rows skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench import skeleton
from bench.common import machine, table, write
from bench.embedder import _grpc_rate, _text_latency, caltech_like
from embedder_service.config import EmbedderConfig
from embedder_service.engine import Engine
from embedder_service.model import CUDA, ClipModel, ProviderError
from embedder_service.models import bundle
from embedder_service.models.verify import cosine_rows
from embedder_service.preprocess import PreprocessSpec, decode
from embedder_service.server import create_server
from embedder_service.tokenizer import TextTokenizer
from protos.semsearch.v1 import embedder_pb2_grpc

BATCHES = (1, 32, 256)
MIN_COSINE = 0.999
WORK = Path(__file__).resolve().parent.parent / ".cache" / "gpu-check"
TEXTS = ["a dog on a beach", "a red car", "two people riding bicycles", "a bowl of soup"] * 8


class StepTimeout(Exception):
    """A step ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise StepTimeout in the main thread once `seconds` have passed (checked between Python calls)."""
    def expire(*_: object) -> None:
        raise StepTimeout(f"over its {seconds:.3g} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def models_cli(args: list[str], timeout_s: float) -> None:
    """Run the project's model tool; its one-line error becomes ours."""
    proc = subprocess.run([sys.executable, "-m", "embedder_service.models", *args], capture_output=True,
                          text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"models {args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")


def obtain_bundles(work: Path, preset: str, given: Path | None, timeout_s: float) -> tuple[Path, Path]:
    """The fp32 bundle (given, regrown from a given skeleton, cached or built) and its fp16 variant."""
    if given and skeleton.is_skeleton(given):
        fp32 = work / f"{given.resolve().name}-regrown"
        if not (fp32 / bundle.MANIFEST).is_file():
            shutil.rmtree(fp32, ignore_errors=True)
            skeleton.grow(given, fp32)
        given = fp32
    fp32 = given or work / f"{preset}-fp32"
    if not (fp32 / bundle.MANIFEST).is_file():
        try:
            import torch  # noqa: F401  (only to give the clear message below)
        except ImportError as exc:
            raise RuntimeError("building a random bundle needs torch; build one where torch is installed with "
                               f"`python -m embedder_service.models random --preset {preset} --out DIR` and "
                               "pass --bundle DIR (that bundle, or its skeleton from `python -m bench.skeleton "
                               "strip`)") from exc
        models_cli(["random", "--preset", preset, "--out", str(fp32)], timeout_s)
    fp16 = work / f"{bundle.load(fp32).model_id.replace('/', '_').replace('@', '-')}-fp16"
    if not (fp16 / bundle.MANIFEST).is_file():
        models_cli(["fp16", str(fp32), "--out", str(fp16)], timeout_s)
    return fp32, fp16


def agreement(fp32: ClipModel, fp16: ClipModel, jpegs: list[bytes]) -> float:
    """The lowest per-row cosine between the two models' vectors for the same pixels and texts."""
    spec = PreprocessSpec(image_size=fp32.bundle.image_size, mean=fp32.bundle.mean, std=fp32.bundle.std,
                          resize=fp32.bundle.image.resize, interpolation=fp32.bundle.image.interpolation)
    pixels = np.stack([decode(d, spec).pixels for d in jpegs[:32]])
    tokenizer = TextTokenizer.of(fp32.bundle)
    ids, mask = tokenizer.pad([tokenizer.tokenize(t)[0] for t in TEXTS[:8]])
    images = cosine_rows(fp32.embed_pixels(pixels), fp16.embed_pixels(pixels))
    texts = cosine_rows(fp32.embed_tokens(ids, mask), fp16.embed_tokens(ids, mask))
    return float(min(images.min(), texts.min()))


def throughput(out: dict[str, Any], model: ClipModel, jpegs: list[bytes], max_batch: int, min_s: float) -> None:
    """Images/s from JPEG bytes per request size, then text latency, into out as each is measured."""
    config = EmbedderConfig(port=0, max_batch=max_batch, max_images_per_request=max(BATCHES),
                            decode_workers=os.cpu_count() or 1)
    server = create_server(config, Engine(model, config))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}",
                                    options=[("grpc.max_receive_message_length", 256 << 20)])
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    try:
        for b in BATCHES:
            out[f"b{b} img/s"] = _grpc_rate(stub, jpegs, b, min_s)
        out["text p50 ms"] = _text_latency(stub, min_s)["text_p50_ms"]
    finally:
        channel.close()
        server.stop(1)


def run_row(name: str, check: Callable[[dict[str, Any]], None], limit_s: float, deadline: float) -> dict[str, Any]:
    """One table row, filled by check as it measures; it ends by limit_s and by the run's deadline.

    A step cut short keeps what it measured and says why the rest is missing.
    """
    started = time.monotonic()
    limit_s = min(limit_s, deadline - started)
    if limit_s < 10:
        return {"row": name, "status": "FAILED: skipped, the run's time budget is spent"}
    row: dict[str, Any] = {"row": name}
    try:
        with time_limit(limit_s):
            check(row)
    except (StepTimeout, ProviderError, RuntimeError, subprocess.TimeoutExpired) as exc:
        row["status"] = f"FAILED: {' '.join(str(exc).split())[:160]}"
    row["seconds"] = round(time.monotonic() - started, 1)
    print(f"  {name}: {row.get('status', 'ok')} ({row['seconds']} s)", file=sys.stderr, flush=True)
    return row


class Check:
    """The rows of one run: models loaded once per precision and provider, all fed the same JPEGs."""

    def __init__(self, fp32_dir: Path, fp16_dir: Path, jpegs: list[bytes], dry: bool, min_s: float) -> None:
        self.dirs = {"fp32": fp32_dir, "fp16": fp16_dir}
        self.jpegs, self.dry, self.min_s = jpegs, dry, min_s
        self.models: dict[tuple[str, str], ClipModel] = {}

    def load(self, precision: str, provider: str) -> ClipModel:
        """The model of a precision on a provider (explicit cuda fails with the reason it cannot run)."""
        if (precision, provider) not in self.models:
            self.models[precision, provider] = ClipModel(bundle.load(self.dirs[precision]), provider)
        return self.models[precision, provider]

    def baseline(self, out: dict[str, Any]) -> None:
        """CPU fp32 as the product serves it by default (batches of 32)."""
        model = self.load("fp32", "cpu")
        out["provider"] = model.providers[0]
        throughput(out, model, self.jpegs, 32, self.min_s)

    def accelerated(self, out: dict[str, Any], precision: str) -> None:
        """A CUDA row (the CPU in a dry run): provider check, fp16 agreement, then throughput."""
        provider = "cpu" if self.dry else "cuda"
        model = self.load(precision, provider)
        active = model.providers[0]
        if not self.dry and active != CUDA:
            raise RuntimeError(f"the session runs on {active}, not CUDA")
        out["provider"] = active
        if precision == "fp16":
            out["min cosine vs fp32"] = agreement(self.load("fp32", provider), model, self.jpegs)
            if out["min cosine vs fp32"] < MIN_COSINE:
                out["status"] = f"FAILED: fp16 disagrees with fp32 (min cosine < {MIN_COSINE})"
        # A GPU wants whole large batches; the CPU default of 32 would cut batch 256 into eight.
        max_batch = max(BATCHES) if active == CUDA else 32
        throughput(out, model, self.jpegs, max_batch, self.min_s)

    def rows(self, deadline: float) -> list[dict[str, Any]]:
        """The baseline, then the accelerated rows (marked skipped in a dry run)."""
        rows = [run_row("CPU fp32 (baseline)", self.baseline, 90, deadline)]
        if self.dry:
            # The fp32 row would repeat the baseline; fp16 on the CPU runs the GPU rows' code, agreement included.
            rows.append(run_row("CPU fp16 (dry run)", lambda out: self.accelerated(out, "fp16"), 120, deadline))
            return rows + [{"row": f"CUDA {p}", "status": "skipped (dry run: no GPU)"} for p in ("fp32", "fp16")]
        return rows + [run_row(f"CUDA {p}", lambda out, p=p: self.accelerated(out, p), 120, deadline)
                       for p in ("fp32", "fp16")]


def report(result: dict[str, Any]) -> None:
    """Print the table and the speed-ups over the CPU baseline."""
    rows = result["rows"]
    columns = ["row", "provider", *(f"b{b} img/s" for b in BATCHES), "text p50 ms", "min cosine vs fp32",
               "status", "seconds"]
    print(f"machine: {result['machine']}; {result['preset']} random bundle; JPEGs of Caltech size; decode workers "
          f"= {os.cpu_count()} cores; total {result['total_s']} s")
    # Cosines near 1 need more digits than the table's two.
    shown = [{**r, "status": r.get("status", "ok"),
              **({"min cosine vs fp32": f"{r['min cosine vs fp32']:.6f}"} if "min cosine vs fp32" in r else {})}
             for r in rows]
    print(table(shown, columns))
    baseline = rows[0].get("b256 img/s")
    for r in rows[1:]:
        if baseline and r.get("b256 img/s"):
            print(f"{r['row']}: {r['b256 img/s'] / baseline:.1f}x the CPU fp32 images/s at batch 256")


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit 1 when a measured row failed or a check did not pass."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU only, tiny bundle, short timings")
    parser.add_argument("--bundle", type=Path, help="a prepared fp32 bundle, or its skeleton (bench.skeleton); "
                                                    "skips building, which needs torch")
    parser.add_argument("--work", type=Path, default=WORK, help=f"where bundles are built and kept (default {WORK})")
    parser.add_argument("--budget-s", type=float, help="time for the whole run (default 420, 150 with --dry-run)")
    parser.add_argument("--json", type=Path, help="write the result here (default bench/results/gpu_check.json)")
    args = parser.parse_args(argv)
    preset, min_s, count = ("tiny", 0.1, 32) if args.dry_run else ("vit-b-32", 4.0, 512)
    args.work.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    deadline = started + (args.budget_s or (150 if args.dry_run else 420)) - 5
    bundle_s = min(180.0, (deadline - started) / 2)
    try:
        with time_limit(bundle_s):
            fp32_dir, fp16_dir = obtain_bundles(args.work, preset, args.bundle, timeout_s=bundle_s)
            distinct = caltech_like(count)
    except (StepTimeout, RuntimeError, subprocess.TimeoutExpired, bundle.BundleError) as exc:
        print(f"gpu_check: no bundles to measure: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    # Repeated where there are fewer than the largest batch: decoding costs the same.
    jpegs = (distinct * (max(BATCHES) // count + 1))[:max(count, max(BATCHES))]
    rows = Check(fp32_dir, fp16_dir, jpegs, args.dry_run, min_s).rows(deadline)
    result = {"machine": machine(), "dry_run": args.dry_run, "preset": preset,
              "bundles": [str(fp32_dir), str(fp16_dir)], "total_s": round(time.monotonic() - started, 1),
              "rows": rows}
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json or write('gpu_check', result)}")
    return 1 if any(str(r.get("status", "")).startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
