"""Search through the gateway against the direct embedder + index calls, at 30k images, in the same run.

`python -m bench.gateway [--rows 30000] [--model PATH]` starts the three real services as processes
(the index with its embedded Postgres, the embedder with a random ViT-B/32 bundle, the gateway), loads
`rows` clustered 512-d vectors with small thumbnails straight through Index.Upsert, builds the index,
then times text searches: (a) the direct path, EmbedTexts + Index.Search over gRPC, and (b) the same
search as `GET /api/search` through the gateway, with 1 and 16 concurrent clients. Direct and gateway
calls are interleaved request by request for the latencies (each client alternates the two paths), so
drift and neighbours on a shared machine hit both alike; requests/s come from each path run alone in
short alternating blocks. Prints a table, writes bench/results/gateway.json (with every latency
sample, as "samples_ms" keyed "path/clients", for the report's distributions).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np

from bench import common
from bench.common import free_port
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc
from semsearch_common import channels
from semsearch_common.enums import enum_word

DIM = 512
REPO = Path(__file__).resolve().parent.parent
ADJECTIVES = ["red", "small", "old", "happy", "wet", "shiny", "wooden", "distant", "sleepy", "striped"]
NOUNS = ["dog on a beach", "bicycle", "mountain lake", "city street at night", "cat", "sailing boat",
         "birthday cake", "forest path", "airplane", "bowl of fruit", "violin", "lighthouse"]


def find_bundle(arg: str) -> Path:
    """The bundle to serve: a path, or a cached random ViT-B/32 (built on first use; needs torch)."""
    if arg != "vit-b-32":
        return Path(arg)
    for root in (REPO / ".cache" / "bench-bundles", REPO / ".cache" / "test-bundles"):
        found = sorted(root.glob("vit-b-32-fp32-*/model.json"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1].parent
    from embedder_service.models import export

    return export.cached_random_bundle(REPO / ".cache" / "bench-bundles", "vit-b-32", "fp32")


def start(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A service as its own process, quiet."""
    return subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env}, cwd=REPO,
                            stdout=subprocess.DEVNULL)


def wait_serving(addr: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    """Block until the gRPC health service at addr says SERVING; RuntimeError if the process exits first."""
    channels.wait_serving(addr, timeout_s, alive=lambda: proc.poll() is None)


def load(stub: index_pb2_grpc.IndexStub, rows: int, model_id: str, batch: int = 500) -> float:
    """Upsert `rows` clustered unit vectors with 2 KB thumbnails; returns rows/s."""
    rng = np.random.default_rng(30)
    centres = rng.standard_normal((max(50, rows // 100), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def send(start_row: int) -> None:
        n = min(batch, rows - start_row)
        local = np.random.default_rng(start_row)
        vecs = centres[local.integers(0, len(centres), n)] + local.standard_normal((n, DIM)).astype(
            np.float32) * (0.35 / np.sqrt(DIM))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        items = []
        for j in range(n):
            original = f"gateway-bench-{start_row + j}".encode()
            items.append(index_pb2.UpsertItem(
                sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
                thumbnail=local.bytes(2000), width=640, height=480, label=f"c{(start_row + j) % 257}",
                source="bench", file_name=f"{start_row + j}.jpg", embedding=vecs[j].tolist(), model_id=model_id))
        stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=600)

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(send, range(0, rows, batch)))
    return rows / (time.perf_counter() - started)


def run_clients(clients: int, per_client: int, makers: dict[str, Callable[[], Callable[[str], None]]],
                queries: list[str]) -> tuple[dict[str, list[float]], float]:
    """Each client sends per_client searches back to back, taking the paths in turn (alternating which
    goes first), so every path sees the same machine at the same moment; returns latencies (s) per path
    and total requests/s."""
    latencies: dict[str, list[float]] = {name: [] for name in makers}
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def worker(offset: int) -> None:
        calls = [(name, make()) for name, make in makers.items()]
        mine: dict[str, list[float]] = {name: [] for name in makers}
        start_gate.wait()
        for i in range(per_client):
            q = queries[(offset * 7 + i) % len(queries)]
            for name, call in calls if i % 2 == 0 else calls[::-1]:
                t = time.perf_counter()
                call(q)
                mine[name].append(time.perf_counter() - t)
        with lock:
            for name, values in mine.items():
                latencies[name].extend(values)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    total = sum(len(v) for v in latencies.values())
    return latencies, total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--model", default="vit-b-32", help="bundle directory (default: cached random ViT-B/32)")
    parser.add_argument("--k", type=int, default=24)
    parser.add_argument("--requests", type=int, default=200, help="searches per client per round, 1 client")
    parser.add_argument("--requests-16", type=int, default=40, help="searches per client per round, 16 clients")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    bundle_dir = find_bundle(args.model)
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-", dir="/tmp"))
    ports = {name: free_port() for name in ("embedder", "index", "gateway")}
    procs = [
        start("index_service", {"INDEX_DATA_DIR": str(root / "index"), "INDEX_PORT": str(ports["index"]),
                                "INDEX_DEFER_INDEX": "true", "INDEX_LOG_LEVEL": "WARNING"}),
        start("embedder_service", {"EMBEDDER_MODEL_DIR": str(bundle_dir), "EMBEDDER_PORT": str(ports["embedder"]),
                                   "EMBEDDER_LOG_LEVEL": "WARNING"}),
    ]
    try:
        embedder_addr, index_addr = f"127.0.0.1:{ports['embedder']}", f"127.0.0.1:{ports['index']}"
        wait_serving(index_addr, procs[0])
        wait_serving(embedder_addr, procs[1])
        options = [("grpc.max_send_message_length", 64 << 20)]
        embedder = embedder_pb2_grpc.EmbedderStub(grpc.insecure_channel(embedder_addr))
        index = index_pb2_grpc.IndexStub(grpc.insecure_channel(index_addr, options=options))
        info = embedder.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=30)
        print(f"loading {args.rows:,} rows ...", flush=True)
        rows_s = load(index, args.rows, info.model_id)
        build = index.BuildIndex(index_pb2.BuildIndexRequest(), timeout=3600)
        count = index.Stats(index_pb2.StatsRequest(), timeout=30).count
        print(f"loaded {count:,} rows at {rows_s:.0f} rows/s, index built in {build.build_seconds:.1f} s", flush=True)

        procs.append(start("gateway", {"GATEWAY_EMBEDDER_ADDR": embedder_addr, "GATEWAY_INDEX_ADDR": index_addr,
                                       "GATEWAY_PORT": str(ports["gateway"]), "GATEWAY_LOG_LEVEL": "WARNING"}))
        base = f"http://127.0.0.1:{ports['gateway']}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                raise RuntimeError("the gateway did not become ready")
            time.sleep(0.2)

        queries = [f"a {a} {n}" for a, n in itertools.product(ADJECTIVES, NOUNS)]
        # Stage times of single-client runs: the direct path's embed and search, and the gateway's own
        # time outside its two calls (its total_ms minus embed_ms and search_ms).
        stage: dict[str, list[float]] = {"embed": [], "search": [], "gateway_own": []}
        single = threading.Event()

        def direct() -> Callable[[str], None]:
            def call(q: str) -> None:
                t = time.perf_counter()
                vec = embedder.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=[q]), timeout=30).results[0].embedding
                t2 = time.perf_counter()
                hits = index.Search(index_pb2.SearchRequest(vector=vec, k=args.k, model_id=info.model_id),
                                    timeout=30).hits
                if single.is_set():
                    stage["embed"].append(t2 - t)
                    stage["search"].append(time.perf_counter() - t2)
                assert len(hits) == args.k
            return call

        def gateway() -> Callable[[str], None]:
            # The standard library's keep-alive client: httpx would add ~0.5 ms of Python per request to
            # the gateway's side of the comparison, which the direct path (C-core gRPC) does not pay.
            conn = http.client.HTTPConnection("127.0.0.1", ports["gateway"], timeout=30)

            def call(q: str) -> None:
                conn.request("GET", "/api/search?" + urllib.parse.urlencode({"q": q, "k": args.k}))
                r = conn.getresponse()
                body = json.loads(r.read())
                assert r.status == 200 and len(body["hits"]) == args.k, body
                if single.is_set():
                    t = body["timings"]
                    stage["gateway_own"].append((t["total_ms"] - t["embed_ms"] - t["search_ms"]) / 1000)
            return call

        both = {"direct": direct, "gateway": gateway}
        run_clients(1, 30, both, queries)  # warm-up: sessions, connections, caches
        stage = {"embed": [], "search": [], "gateway_own": []}
        latencies: dict[tuple[str, int], list[float]] = {}
        throughput: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for clients, per in ((1, args.requests), (16, args.requests_16)):
                # Latency: both paths interleaved request by request.
                if clients == 1:
                    single.set()
                lat, _ = run_clients(clients, per, both, queries)
                single.clear()
                for name, values in lat.items():
                    latencies.setdefault((name, clients), []).extend(values)
                # Throughput: each path alone, in short alternating blocks.
                for name in ("direct", "gateway"):
                    _, rps = run_clients(clients, max(4, per // 2), {name: both[name]}, queries)
                    throughput.setdefault((name, clients), []).append(rps)
        samples = {key: (latencies[key], throughput[key]) for key in latencies}
        report(samples, stage, args, info, count, rows_s, build.build_seconds)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


def report(samples: dict[tuple[str, int], tuple[list[float], list[float]]], stage: dict[str, list[float]],
           args: argparse.Namespace, info: Any, count: int, rows_s: float, build_s: float) -> None:
    """Print the table and write the JSON."""
    rows: list[dict[str, Any]] = []
    for (name, clients), (lat, rps) in sorted(samples.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        pct = common.percentiles(lat)
        rows.append({"path": "direct embed+search" if name == "direct" else "gateway /api/search",
                     "clients": clients, **pct, "req_per_s": float(np.mean(rps)), "n": len(lat)})
    for clients in (1, 16):
        d, g = (next(r for r in rows if r["clients"] == clients and r["path"].startswith(p))
                for p in ("direct", "gateway"))
        g["overhead_p50"] = f"{(g['p50_ms'] / d['p50_ms'] - 1) * 100:+.1f}%"
        g["overhead_p99"] = f"{(g['p99_ms'] / d['p99_ms'] - 1) * 100:+.1f}%"
    stages = {k: common.percentiles(v) for k, v in stage.items()}
    print(common.table(rows, ["path", "clients", "p50_ms", "p99_ms", "req_per_s", "overhead_p50", "overhead_p99",
                              "n"]))
    print(f"1 client, p50: direct embed {stages['embed']['p50_ms']:.2f} ms + search "
          f"{stages['search']['p50_ms']:.2f} ms; time inside the gateway's handler besides its two calls "
          f"{stages['gateway_own']['p50_ms']:.2f} ms")
    machine, precision = common.machine(), enum_word(embedder_pb2.Precision, info.precision)
    print(f"{machine}; model {info.model_id} ({precision}, {', '.join(info.providers)}); {count:,} rows")
    path = common.write("gateway", {
        "machine": machine, "model_id": info.model_id, "precision": precision, "providers": list(info.providers),
        "rows": count, "load_rows_per_s": rows_s, "index_build_s": build_s, "k": args.k, "rounds": args.rounds,
        "results": rows, "stages_1_client": stages,
        "samples_ms": {f"{name}/{clients}": [round(x * 1000, 3) for x in lat]
                       for (name, clients), (lat, _) in samples.items()},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
