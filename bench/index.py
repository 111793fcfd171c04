"""Benchmark of the index service over gRPC: bulk upsert, index build, search latency and recall.

`python -m bench.index [--sizes 30000,100000]` starts the real service (`python -m index_service`, with
its embedded Postgres + pgvector) per size in a fresh data dir, loads clustered 512-d unit vectors with
~15 KB thumbnails through Upsert announcing the load's size (the service defers the index of the empty
collection by itself, as for the loader), builds the index, and measures ANN and exact
search in the same run. Then the ef sweep: the service is restarted on the same data with each
INDEX_HNSW_EF of --ef-sweep (pgvector's hnsw.ef_search; the service raises it to k per query) and the
same queries go through the same gRPC Search, so recall@10 and latency are those of the real path at
that ef. Prints a table and writes bench/results/index.json (with every latency sample of the default
run, for the report's distributions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.common import free_port
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common import channels
from semsearch_common.enums import enum_word

DIM = 512
THUMB_BYTES = 15_000
RESULTS = Path(__file__).resolve().parent / "results" / "index.json"


def clustered(rng: np.random.Generator, n: int, clusters: int) -> np.ndarray:
    """CLIP-like data: unit vectors around random centres."""
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * (
        0.35 / np.sqrt(DIM))
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def start_service(data_dir: Path, port: int, ef: int | None = None, **extra: str) -> subprocess.Popen[bytes]:
    """The real service in its own process, on its own embedded Postgres (tuned from the machine)."""
    # Exact search is measured here at every size: the service's refusal above a size is switched off.
    env = dict(os.environ, INDEX_DATA_DIR=str(data_dir), INDEX_PORT=str(port), INDEX_LOG_LEVEL="WARNING",
               INDEX_EXACT_MAX_ROWS="0", **extra)
    if ef is not None:
        env["INDEX_HNSW_EF"] = str(ef)
    proc = subprocess.Popen([sys.executable, "-m", "index_service"], env=env)
    try:
        channels.wait_serving(f"127.0.0.1:{port}", 60, alive=lambda: proc.poll() is None)
    except (TimeoutError, RuntimeError):
        proc.kill()
        raise
    return proc


def make_batch(vecs: np.ndarray, start: int, labels: np.ndarray, expected_rows: int = 0) -> index_pb2.UpsertRequest:
    items = []
    for i in range(start, start + len(vecs)):
        original = f"bench-original-{i}".encode() * 8
        items.append(index_pb2.UpsertItem(
            sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
            thumbnail=os.urandom(THUMB_BYTES), width=640, height=480, label=f"c{labels[i - start]}",
            source="bench", file_name=f"{i}.jpg", embedding=vecs[i - start].tolist(), model_id="bench@1"))
    return index_pb2.UpsertRequest(items=items, expected_rows=expected_rows)


def load(stub: index_pb2_grpc.IndexStub, vecs: np.ndarray, labels: np.ndarray, batch: int, clients: int,
         offset: int = 0, expected_rows: int = 0) -> tuple[float, np.ndarray]:
    """Upsert everything in batches from `clients` threads; returns rows/s (request building included), ids."""
    starts = list(range(0, len(vecs), batch))

    def send(s: int) -> list[int]:
        req = make_batch(vecs[s:s + batch], offset + s, labels[s:s + batch], expected_rows)
        res = stub.Upsert(req, timeout=300)
        assert all(not r.HasField("error") for r in res.results), res.results[0].error
        return [r.id for r in res.results]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        ids = [i for chunk in ex.map(send, starts) for i in chunk]
    return len(vecs) / (time.perf_counter() - started), np.array(ids)


def search_run(stub: index_pb2_grpc.IndexStub, queries: np.ndarray, exact: bool) -> tuple[list[float], list[list[int]]]:
    times, ids = [], []
    for q in queries:
        req = index_pb2.SearchRequest(vector=q.tolist(), k=10, exact=exact)
        t = time.perf_counter()
        res = stub.Search(req, timeout=30)
        times.append((time.perf_counter() - t) * 1000)
        ids.append([h.id for h in res.hits])
    return times, ids


def connect(port: int) -> tuple[grpc.Channel, index_pb2_grpc.IndexStub]:
    """A channel and stub to the service on port."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    return channel, index_pb2_grpc.IndexStub(channel)


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait (the service stops its embedded Postgres)."""
    proc.terminate()
    proc.wait(timeout=60)


def recall_at_10(found: list[list[int]], truth: list[list[int]]) -> float:
    """Mean overlap of each result with the exact top 10."""
    return float(np.mean([len(set(a) & set(t)) / 10 for a, t in zip(found, truth, strict=True)]))


def run_size(n: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Load n rows, build, measure the default search path, sweep ef, then upsert into the built index."""
    rng = np.random.default_rng(n)
    vecs = clustered(rng, n, max(50, n // 100))
    labels = rng.integers(0, 257, n)
    port = free_port()
    data_dir = root / f"n{n}"
    proc = start_service(data_dir, port)
    channel, stub = connect(port)
    try:
        rows_s, ids = load(stub, vecs, labels, args.batch, args.clients, expected_rows=n)
        deferred = stub.Stats(index_pb2.StatsRequest(), timeout=30).index_state != index_pb2.INDEX_STATE_READY
        build = stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=3600)
        stats = stub.Stats(index_pb2.StatsRequest(), timeout=30)
        picks = rng.integers(0, n, args.queries)
        noise = rng.standard_normal((args.queries, DIM)).astype(np.float32) * (0.2 / np.sqrt(DIM))
        queries = vecs[picks] + noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        search_run(stub, queries[:20], exact=False)  # warm-up: caches, connections
        ann_ms, ann_ids = search_run(stub, queries, exact=False)
        exact_ms, exact_ids = search_run(stub, queries[: args.exact_queries], exact=True)
        truth = _truth(vecs, queries, ids)
        recall = recall_at_10(ann_ids, truth)
        agree = float(np.mean([set(e) == set(t) for e, t in zip(exact_ids, truth[: len(exact_ids)], strict=True)]))
        channel.close()
        stop_service(proc)
        sweep = []
        for ef in (int(e) for e in args.ef_sweep.split(",") if e):
            proc = start_service(data_dir, port, ef)
            channel, stub = connect(port)
            search_run(stub, queries, exact=False)  # warm-up: a restarted Postgres starts with cold buffers
            ms, found = search_run(stub, queries, exact=False)
            sweep.append({"ef_search": ef, "p50_ms": float(np.percentile(ms, 50)),
                          "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(np.mean(ms)),
                          "recall_at_10": recall_at_10(found, truth)})
            print(f"  ef_search {ef}: recall@10 {sweep[-1]['recall_at_10']:.3f}, p50 {sweep[-1]['p50_ms']:.2f} ms",
                  flush=True)
            channel.close()
            stop_service(proc)
        proc = start_service(data_dir, port)
        channel, stub = connect(port)
        extra = vecs[: args.indexed_rows].copy()
        extra_rows_s, _ = load(stub, _perturb(rng, extra), labels, args.batch, args.clients, offset=n)
        ops = measure_stats(stub)
        channel.close()
        stop_service(proc)
        ops["serving_with_sweep_due_s"] = measure_serving_with_sweep_due(data_dir, port)
        return {**ops, "index_deferred_by_service": deferred,
            "rows": n, "upsert_rows_per_s": rows_s, "index_build_s": build.build_seconds,
            "search_p50_ms": float(np.percentile(ann_ms, 50)), "search_p99_ms": float(np.percentile(ann_ms, 99)),
            "exact_p50_ms": float(np.percentile(exact_ms, 50)), "recall_at_10": recall,
            "exact_matches_numpy": agree, "upsert_indexed_rows_per_s": extra_rows_s,
            "table_mb": stats.table_bytes / 1e6, "index_mb": stats.index_bytes / 1e6,
            "backend": f"{enum_word(index_pb2.Backend, stats.backend)} {stats.extension_version}",
            "index_params": dict(stats.index_params),
            "ef_sweep": sweep, "ef_sweep_method": "service restarted per INDEX_HNSW_EF; same queries over gRPC",
            "search_samples_ms": [round(x, 3) for x in ann_ms],
            "exact_samples_ms": [round(x, 3) for x in exact_ms],
        }
    finally:
        channel.close()
        if proc.poll() is None:
            stop_service(proc)


def measure_stats(stub: index_pb2_grpc.IndexStub, calls: int = 50) -> dict[str, Any]:
    """Latency of Stats (the page asks for it on every load), and whether its figures were estimates."""
    stub.Stats(index_pb2.StatsRequest(), timeout=30)  # warm-up
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        stats = stub.Stats(index_pb2.StatsRequest(), timeout=30)
        times.append((time.perf_counter() - t) * 1000)
    return {"stats_p50_ms": float(np.percentile(times, 50)), "stats_p99_ms": float(np.percentile(times, 99)),
            "stats_estimated": stats.estimated, "stats_count": stats.count}


def measure_serving_with_sweep_due(data_dir: Path, port: int) -> float:
    """Seconds from starting the service to SERVING with the media sweep due at once (orphan grace 0)."""
    started = time.perf_counter()
    proc = start_service(data_dir, port, INDEX_ORPHAN_GRACE_S="0")
    seconds = time.perf_counter() - started
    stop_service(proc)
    return seconds


def _perturb(rng: np.random.Generator, vecs: np.ndarray) -> np.ndarray:
    out = vecs + rng.standard_normal(vecs.shape).astype(np.float32) * (0.1 / np.sqrt(DIM))
    unit: np.ndarray = out / np.linalg.norm(out, axis=1, keepdims=True)
    return unit


def _truth(vecs: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> list[list[int]]:
    """Exact top-10 ids by numpy."""
    order = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    return [[int(ids[i]) for i in row] for row in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="30000")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exact-queries", type=int, default=30)
    parser.add_argument("--indexed-rows", type=int, default=2048, help="rows upserted after the build")
    parser.add_argument("--ef-sweep", default="10,20,40,100,200",
                        help="INDEX_HNSW_EF values to sweep (empty: none)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-index-", dir="/tmp"))
    results = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            results.append(run_size(n, args, root))
            print_table(results)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    machine = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "batch": args.batch, "clients": args.clients,
                                    "results": results}, indent=2))
    print(f"\n{machine}\nwrote {args.out}")


def print_table(results: list[dict[str, Any]]) -> None:
    cols = [("rows", "{:d}"), ("upsert_rows_per_s", "{:.0f}"), ("index_build_s", "{:.1f}"),
            ("search_p50_ms", "{:.2f}"), ("search_p99_ms", "{:.2f}"), ("exact_p50_ms", "{:.1f}"),
            ("recall_at_10", "{:.3f}"), ("upsert_indexed_rows_per_s", "{:.0f}"), ("stats_p50_ms", "{:.2f}"),
            ("serving_with_sweep_due_s", "{:.1f}")]
    print(" | ".join(c for c, _ in cols) + " | exact/ann")
    for r in results:
        ratio = r["exact_p50_ms"] / r["search_p50_ms"]
        print(" | ".join(f.format(r[c]) for c, f in cols) + f" | {ratio:.0f}x")


if __name__ == "__main__":
    main()
