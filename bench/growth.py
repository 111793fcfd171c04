"""Growth curve of the index with its default settings: recall, latency, sizes and load rates as rows grow.

`python -m bench.growth [--sizes 30000,100000,300000] [--types float32,float16]` starts the real service
(`python -m index_service` on its embedded Postgres + pgvector) per size and vector type in a fresh data
dir, with the recall target on (INDEX_TARGET_RECALL's default) and nothing else tuned. It creates the
collection, loads clustered 512-d unit vectors with ~15 KB thumbnails through Upsert (rows/s into an empty
collection), builds the index, waits for the service's own recall estimate (the keeper widens the search
breadth until the target holds), then measures in the same run: recall@10 against numpy's exact answer,
p50/p99 at k=10 and k=100, a label-filtered search, the time of Stats, bytes per vector on disk (table and
index) and upserts into the indexed collection. Writes bench/results/growth.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import free_port
from bench.index import (
    DIM,
    clustered,
    connect,
    make_batch,
    measure_serving_with_sweep_due,
    recall_at_10,
    start_service,
    stop_service,
)
from protos.semsearch.v1 import index_pb2, index_pb2_grpc

RESULTS = Path(__file__).resolve().parent / "results" / "growth.json"
COLLECTION = "bench"


def start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """The service with default search settings; only the index build is left to the benchmark."""
    return start_service(data_dir, port, INDEX_DEFER_INDEX="true")


def upsert(stub: index_pb2_grpc.IndexStub, vecs: np.ndarray, labels: np.ndarray, offset: int, batch: int,
           clients: int) -> tuple[float, list[int]]:
    """Rows/s of Upsert into the collection from `clients` threads, and the ids in order."""

    def send(s: int) -> list[int]:
        req = make_batch(vecs[s:s + batch], offset + s, labels[s:s + batch])
        req.collection = COLLECTION
        res = stub.Upsert(req, timeout=600)
        assert all(not r.HasField("error") for r in res.results), res.results[0].error
        return [r.id for r in res.results]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        ids = [i for chunk in ex.map(send, range(0, len(vecs), batch)) for i in chunk]
    return len(vecs) / (time.perf_counter() - started), ids


def timed_search(stub: index_pb2_grpc.IndexStub, queries: np.ndarray, k: int,
                 labels: list[str] | None = None, exact: bool = False) -> tuple[list[float], list[list[int]]]:
    """Latency (ms) and ids of one Search per query."""
    times, found = [], []
    for q in queries:
        req = index_pb2.SearchRequest(vector=q.tolist(), k=k, collection=COLLECTION, exact=exact,
                                      filter=index_pb2.Filter(labels=labels or []))
        t = time.perf_counter()
        reply = stub.Search(req, timeout=60)
        times.append((time.perf_counter() - t) * 1000)
        found.append([h.id for h in reply.hits])
    return times, found


def wait_for_estimate(stub: index_pb2_grpc.IndexStub, limit_s: float, quiet_s: float) -> index_pb2.StatsResponse:
    """Stats once the keeper has settled: an estimate at or above target (or the widest breadth), and no
    further measurement for `quiet_s` (the keeper measures again at once whenever it moved the breadth)."""
    deadline = time.monotonic() + limit_s
    seen, since = 0, time.monotonic()
    while True:
        stats: index_pb2.StatsResponse = stub.Stats(index_pb2.StatsRequest(collection=COLLECTION), timeout=30)
        if stats.recall_measured_at != seen:
            seen, since = stats.recall_measured_at, time.monotonic()
            print(f"  estimate {stats.recall_estimate:.3f} ({stats.recall_queries} queries), breadth "
                  f"{stats.search_breadth}", flush=True)
        holds = stats.recall_estimate >= stats.recall_target or stats.search_breadth >= 1000
        if (seen and holds and time.monotonic() - since > quiet_s) or time.monotonic() > deadline:
            return stats
        time.sleep(5)


def run(n: int, vector_type: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One point of the curve."""
    rng = np.random.default_rng(n)
    vecs = clustered(rng, n, max(50, n // 100))
    labels = rng.integers(0, 257, n)
    port, data_dir = free_port(), root / f"{vector_type}-{n}"
    proc = start(data_dir, port)
    channel, stub = connect(port)
    try:
        stub.CreateCollection(index_pb2.CreateCollectionRequest(name=COLLECTION, model_id="bench@1", dim=DIM,
                                                                vector_type=vector_type), timeout=60)
        rows_s, ids = upsert(stub, vecs, labels, 0, args.batch, args.clients)
        print(f"  {n} rows loaded at {rows_s:.0f} rows/s", flush=True)
        build = stub.BuildIndex(index_pb2.BuildIndexRequest(collection=COLLECTION), timeout=7200)
        print(f"  index built in {build.build_seconds:.0f} s", flush=True)
        stats = wait_for_estimate(stub, args.settle_s, args.quiet_s)
        picks = rng.integers(0, n, args.queries)
        queries = vecs[picks] + rng.standard_normal((args.queries, DIM)).astype(np.float32) * (0.2 / np.sqrt(DIM))
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        timed_search(stub, queries[:20], 10)  # warm-up
        ms10, found = timed_search(stub, queries, 10)
        ms100, _ = timed_search(stub, queries[: args.queries // 3], 100)
        filtered_ms, _ = timed_search(stub, queries[: args.queries // 3], 10, labels=["c1", "c2", "c3"])
        exact_ms, _ = timed_search(stub, queries[: args.exact_queries], 10, exact=True)
        order = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
        recall = recall_at_10(found, [[ids[i] for i in row] for row in order])
        stats_ms = []
        for _ in range(20):
            t = time.perf_counter()
            stub.Stats(index_pb2.StatsRequest(collection=COLLECTION), timeout=30)
            stats_ms.append((time.perf_counter() - t) * 1000)
        extra = vecs[: args.indexed_rows] + rng.standard_normal((args.indexed_rows, DIM)).astype(np.float32) * 0.01
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        indexed_rows_s, _ = upsert(stub, extra, labels, n, args.batch, args.clients)
        channel.close()
        stop_service(proc)
        serving_s = measure_serving_with_sweep_due(data_dir, port)
        return {
            "rows": n, "vector_type": vector_type, "upsert_empty_rows_per_s": rows_s,
            "upsert_indexed_rows_per_s": indexed_rows_s, "index_build_s": build.build_seconds,
            "recall_at_10": recall, "recall_estimate": stats.recall_estimate, "search_breadth": stats.search_breadth,
            "search_p50_ms": float(np.percentile(ms10, 50)), "search_p99_ms": float(np.percentile(ms10, 99)),
            "k100_p50_ms": float(np.percentile(ms100, 50)), "k100_p99_ms": float(np.percentile(ms100, 99)),
            "filtered_p50_ms": float(np.percentile(filtered_ms, 50)),
            "filtered_p99_ms": float(np.percentile(filtered_ms, 99)),
            "exact_p50_ms": float(np.percentile(exact_ms, 50)),
            "stats_p50_ms": float(np.percentile(stats_ms, 50)), "stats_p99_ms": float(np.percentile(stats_ms, 99)),
            "stats_estimated": stats.estimated, "serving_with_sweep_due_s": serving_s,
            "index_params": dict(stats.index_params), "postgres": stats.postgres_version,
            "table_bytes_per_row": stats.table_bytes / n, "index_bytes_per_row": stats.index_bytes / n,
        }
    finally:
        channel.close()
        if proc.poll() is None:
            stop_service(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


COLUMNS = [("rows", "{:d}"), ("vector_type", "{}"), ("recall_at_10", "{:.3f}"), ("recall_estimate", "{:.3f}"),
           ("search_breadth", "{:d}"), ("search_p50_ms", "{:.2f}"), ("search_p99_ms", "{:.2f}"),
           ("k100_p99_ms", "{:.1f}"), ("filtered_p50_ms", "{:.2f}"), ("index_build_s", "{:.1f}"),
           ("upsert_empty_rows_per_s", "{:.0f}"), ("upsert_indexed_rows_per_s", "{:.0f}"),
           ("index_bytes_per_row", "{:.0f}"), ("table_bytes_per_row", "{:.0f}"), ("stats_p50_ms", "{:.1f}")]


def print_table(results: list[dict[str, Any]]) -> None:
    """The curve so far, one row per point."""
    print(" | ".join(c for c, _ in COLUMNS))
    for r in results:
        print(" | ".join(f.format(r[c]) for c, f in COLUMNS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="30000,100000,300000")
    parser.add_argument("--types", default="float32,float16")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--indexed-rows", type=int, default=4096, help="rows upserted after the build")
    parser.add_argument("--exact-queries", type=int, default=10)
    parser.add_argument("--settle-s", type=float, default=1800, help="longest wait for the recall keeper")
    parser.add_argument("--quiet-s", type=float, default=170,
                        help="the keeper has settled once it measured nothing new for this long")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-growth-", dir="/tmp"))
    results: list[dict[str, Any]] = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            for vector_type in args.types.split(","):
                results.append(run(n, vector_type, args, root))
                print_table(results)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    machine = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(f"\n{machine}\nwrote {args.out}")


if __name__ == "__main__":
    main()
