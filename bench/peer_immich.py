"""Side by side with immich's machine-learning service: same random ViT-B/32 weights, same JPEGs, same cores.

`python -m bench.peer_immich --immich PATH/machine-learning --venv VENV [--spin-us LIST] [--quick] [--rounds N]`:
PATH is an immich checkout (only its machine-learning/ folder is used), VENV a virtual environment with
its Python dependencies and onnxruntime (see bench/README.md). The script writes our cached random fp32
ViT-B/32 image tower into immich's model-cache layout under a temporary folder (as the model
"ViT-B-32__openai", so immich serves it without downloading anything), starts immich on a loopback port
and our embedder (fp32 and int8 bundles with the default settings; with --spin-us also int8 with other
EMBEDDER_SPIN_US values) as separate processes, and measures images/s of single-image requests from 1, 4
and 8 concurrent clients: POST /predict for immich, EmbedImages for ours. Engines and client counts are
interleaved round by round, so ratios compare windows measured moments apart on a shared machine.
Without --immich/--venv (or when they are missing) it says so and exits 0.
Writes bench/results/peer_immich.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import onnx

from bench.common import free_port, machine, table, write
from bench.embedder import CACHE, caltech_like
from bench.interleave import describe, interleaved, ratios
from embedder_service.models import bundle as bundles
from embedder_service.models import export
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc

MODEL = "ViT-B-32__openai"  # a name immich knows as open_clip; its files are ours, so nothing is downloaded
ENTRIES = json.dumps({"clip": {"visual": {"modelName": MODEL}}})
CLIENTS = (1, 4, 8)
SKIPPED = ("give --immich PATH/machine-learning (an immich checkout) and --venv VENV with its dependencies; "
           "see bench/README.md")
ROOT = Path(__file__).resolve().parent.parent


def immich_cache(bundle_dir: Path, cache_root: Path) -> Path:
    """Write the bundle's image tower in immich's model-cache layout; returns the cache folder."""
    found = bundles.load(bundle_dir)
    model_dir = cache_root / "clip" / MODEL
    (model_dir / "visual").mkdir(parents=True)
    graph = onnx.load(str(found.image_onnx))
    # immich feeds the tower as "image"; the graph is ours otherwise (same weights, same ops).
    for value in graph.graph.input:
        if value.name == bundles.IMAGE_INPUT:
            value.name = "image"
    for node in graph.graph.node:
        node.input[:] = ["image" if name == bundles.IMAGE_INPUT else name for name in node.input]
    onnx.save(graph, str(model_dir / "visual" / "model.onnx"))
    preprocess = {"size": [found.image.size, found.image.size], "mean": list(found.image.mean),
                  "std": list(found.image.std), "interpolation": found.image.interpolation, "resize_mode": "shortest"}
    (model_dir / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess))
    config = {"embed_dim": found.dim, "vision_cfg": {"image_size": found.image.size},
              "text_cfg": {"context_length": found.text.context_length}}
    (model_dir / "config.json").write_text(json.dumps(config))
    return cache_root


def immich_python(checkout: Path | None, venv: Path | None) -> Path | None:
    """The venv's python when `checkout` holds immich's machine-learning package and `venv` a python, else None."""
    python = venv / "bin" / "python" if venv else None
    if not checkout or not (checkout / "immich_ml" / "main.py").is_file() or not python or not python.exists():
        return None
    return python


@contextmanager
def immich_serving(checkout: Path, python: Path, fp32: Path) -> Iterator[int]:
    """immich's machine-learning service on a loopback port, serving `fp32`'s image tower; yields the port."""
    work = Path(tempfile.mkdtemp(prefix="peer-immich-"))
    port = free_port()
    env = {"MACHINE_LEARNING_CACHE_FOLDER": str(immich_cache(fp32, work / "cache")),
           "IMMICH_HOST": "127.0.0.1", "IMMICH_PORT": str(port), "MACHINE_LEARNING_MODEL_TTL": "0",
           # Keep-alive past the pauses between measurement windows (immich's default is 2 s).
           "MACHINE_LEARNING_HTTP_KEEPALIVE_TIMEOUT_S": "60",
           "MACHINE_LEARNING_PRELOAD__CLIP__VISUAL": MODEL, "HF_HUB_OFFLINE": "1",
           # immich's __main__ starts gunicorn as "python -m gunicorn": its venv must come first.
           "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(checkout)}
    try:
        with process([str(python), "-m", "immich_ml"], env, _pings(port), "immich", checkout):
            yield port
    finally:
        shutil.rmtree(work, ignore_errors=True)


def multipart(image: bytes) -> tuple[bytes, str]:
    """The /predict form body (entries + image file) and its content type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="entries"\r\n\r\n{ENTRIES}\r\n'.encode(),
             f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
             f"Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n", f"--{boundary}--\r\n".encode()]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def immich_caller(port: int, images: list[bytes]) -> Callable[[int], object]:
    """call(i): one /predict of image i on this thread's kept-alive connection."""
    bodies = [multipart(d) for d in images]
    local: dict[int, http.client.HTTPConnection] = {}

    def call(i: int) -> object:
        key = threading.get_ident()
        body, ctype = bodies[i % len(bodies)]
        for attempt in range(2):
            conn = local.get(key) or local.setdefault(key, http.client.HTTPConnection("127.0.0.1", port, timeout=120))
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": ctype})
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # A kept-alive connection the server closed between windows: open a new one, once.
                conn.close()
                del local[key]
                if attempt:
                    raise
        if response.status != 200:
            raise RuntimeError(f"immich /predict answered {response.status}: {data[:200]!r}")
        return data

    return call


def ours_caller(port: int, images: list[bytes]) -> Callable[[int], object]:
    """call(i): one single-image EmbedImages of image i."""
    stub = embedder_pb2_grpc.EmbedderStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    requests = [embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=d)]) for d in images]
    return lambda i: stub.EmbedImages(requests[i % len(requests)], timeout=120)


@contextmanager
def process(argv: list[str], env: dict[str, str], ready: Callable[[], bool], name: str,
            cwd: Path | None = None) -> Iterator[None]:
    """A server process, started, waited for until ready() (at most 5 minutes) and stopped on exit."""
    log = tempfile.NamedTemporaryFile(prefix=f"peer-{name}-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = Path(log.name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} did not come up (log {log.name}):\n{tail}")
            time.sleep(1)
        yield
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def _pings(port: int) -> Callable[[], bool]:
    def ping() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200
        except OSError:
            return False
    return ping


def _serves(port: int, image: bytes) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            ours_caller(port, [image])(0)
            return True
        except grpc.RpcError:
            return False
    return ready


def main() -> int:
    """Set both services up, measure, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--immich", type=Path, help="immich's machine-learning/ folder (of a checkout)")
    parser.add_argument("--venv", type=Path, help="virtual environment with immich's dependencies")
    parser.add_argument("--fp32", type=Path, help="fp32 ViT-B/32 bundle (default: the cached random one)")
    parser.add_argument("--int8", type=Path, help="its int8 bundle (default: the cached random one)")
    parser.add_argument("--spin-us", default="",
                        help="also measure our int8 with these comma-separated EMBEDDER_SPIN_US values (0: "
                             "threads sleep at once; 1000000: they spin, as immich's do)")
    parser.add_argument("--quick", action="store_true", help="shorter windows and fewer rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 5, quick 2)")
    args = parser.parse_args()
    try:
        spins = [int(value) for value in filter(None, args.spin_us.split(","))]
    except ValueError:
        parser.error(f"--spin-us takes whole microseconds separated by commas, not {args.spin_us!r}")
    python = immich_python(args.immich, args.venv)
    if python is None:
        print(f"skipped: {SKIPPED}")
        return 0
    rounds, min_s = args.rounds or (2 if args.quick else 5), 1.5 if args.quick else 4.0
    images = caltech_like(32 if args.quick else 64)
    fp32 = args.fp32 or export.cached_random_bundle(CACHE, "vit-b-32", "fp32")
    int8 = args.int8 or export.cached_random_bundle(CACHE, "vit-b-32", "int8")
    ours_argv = [sys.executable, "-m", "embedder_service"]
    ours: dict[str, tuple[Path, dict[str, str]]] = {"fp32": (fp32, {}), "int8": (int8, {})}  # the defaults
    for spin_us in spins:
        ours[f"int8 spin {spin_us} us"] = (int8, {"EMBEDDER_SPIN_US": str(spin_us)})
    with ExitStack() as stack:
        callers = {"immich": immich_caller(stack.enter_context(immich_serving(args.immich, python, fp32)), images)}
        for name, (bundle_dir, settings) in ours.items():
            port = free_port()
            env = {"EMBEDDER_MODEL_DIR": str(bundle_dir), "EMBEDDER_PORT": str(port), "EMBEDDER_PROVIDER": "cpu",
                   **settings}
            stack.enter_context(process(ours_argv, env, _serves(port, images[0]), f"ours-{name}", ROOT))
            callers[f"ours {name}"] = ours_caller(port, images)
        started = time.time()
        samples = interleaved(callers, CLIENTS, rounds, min_s)
    result: dict[str, Any] = {
        "machine": machine(), "load_average": os.getloadavg(), "rounds": rounds, "window_s": min_s,
        "seconds": time.time() - started, "images_per_s": samples,
        "ratios": {e: ratios(samples, e, "immich") for e in samples if e != "immich"}}
    rows = [{"engine": e, **{f"{c} clients img/s": statistics.median(samples[e][str(c)]) for c in CLIENTS}}
            for e in samples]
    print(table(rows, list(rows[0])))
    for engine, by_clients in result["ratios"].items():
        print(describe(f"{engine} / immich", by_clients))
    print(f"\nwrote {write('peer_immich', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
