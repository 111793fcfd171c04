"""A bounded search load through the gateway: many concurrent clients for a fixed time, on loopback.

`python -m bench.search_load [--rows 30000] [--clients 32] [--seconds 60]` starts the three real services
as processes (as bench.gateway does), loads `rows` clustered vectors straight through Index.Upsert,
builds the index, then runs `clients` threads sending `GET /api/search` back to back for `seconds`.
Records every request (when it ended, how long it took, its status), the requests/s of each second, and
the resident memory of the gateway, embedder and index processes once a second. Prints a summary and
writes bench/results/search_load.json (the report prefers tests/system's load JSON when one exists).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import shutil
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psutil

from bench import common
from bench.common import free_port
from bench.gateway import ADJECTIVES, NOUNS, find_bundle, load, start, wait_serving
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc
from semsearch_common.enums import enum_word


def wait_ready(base: str, proc: object, timeout_s: float = 60) -> None:
    """Block until the gateway answers /readyz with 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")


def run_load(port: int, clients: int, seconds: float, k: int) -> list[tuple[float, float, int]]:
    """(end time since start s, latency s, HTTP status or 0 for a transport error) per request."""
    queries = [f"a {a} {n}" for a, n in itertools.product(ADJECTIVES, NOUNS)]
    records: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    gate = threading.Barrier(clients + 1)
    origin = [0.0]

    def worker(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        gate.wait()
        i = 0
        while time.perf_counter() - origin[0] < seconds:
            q = queries[(c * 13 + i) % len(queries)]
            t = time.perf_counter()
            try:
                conn.request("GET", "/api/search?" + urllib.parse.urlencode({"q": q, "k": k}))
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            end = time.perf_counter()
            mine.append((end - origin[0], end - t, status))
            i += 1
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    origin[0] = time.perf_counter()
    gate.wait()
    for t in threads:
        t.join()
    return records


def sample_memory(pids: dict[str, int], stop: threading.Event, out: list[dict[str, float]]) -> None:
    """Append {"t": s, name: RSS MB, ...} once a second until stop is set."""
    started = time.perf_counter()
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    while not stop.wait(1.0):
        row = {"t": round(time.perf_counter() - started, 2)}
        for name, proc in procs.items():
            try:
                row[name] = proc.memory_info().rss / 1e6
            except psutil.Error:
                row[name] = float("nan")
        out.append(row)


def summarize(records: list[tuple[float, float, int]], memory: list[dict[str, float]], seconds: float,
              window_s: float) -> dict[str, Any]:
    """Latency percentiles, requests/s overall and per second, errors, memory growth first vs last window."""
    ok = [lat for _, lat, status in records if status == 200]
    # Whole seconds only: the last, partial one holds just the requests still in flight at the deadline.
    per_second = np.bincount(np.array([int(end) for end, _, _ in records]), minlength=int(seconds))[:int(seconds)]
    growth = {}
    for name in (memory[0].keys() - {"t"}) if memory else ():
        first = [m[name] for m in memory if m["t"] <= window_s]
        last = [m[name] for m in memory if m["t"] >= memory[-1]["t"] - window_s]
        growth[name] = {"first_mb": float(np.mean(first)), "last_mb": float(np.mean(last)),
                        "growth": float(np.mean(last) / np.mean(first) - 1)}
    duration = max(end for end, _, _ in records)
    return {"requests": len(records), "errors": len(records) - len(ok),
            "requests_per_s": len(records) / duration, **common.percentiles(ok),
            "timeline_requests_per_s": [int(x) for x in per_second],
            "memory_growth": growth, "memory": memory,
            "samples_ms": [round(x * 1000, 3) for x in ok[:: max(1, len(ok) // 5000)]]}


def main() -> None:
    """Start the services, load, run the clients, print the summary, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--k", type=int, default=24)
    parser.add_argument("--model", default="vit-b-32", help="bundle directory (default: cached random ViT-B/32)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-load-", dir="/tmp"))
    ports = {name: free_port() for name in ("embedder", "index", "gateway")}
    e_addr, i_addr = f"127.0.0.1:{ports['embedder']}", f"127.0.0.1:{ports['index']}"
    procs = [
        start("index_service", {"INDEX_DATA_DIR": str(root / "index"), "INDEX_PORT": str(ports["index"]),
                                "INDEX_DEFER_INDEX": "true", "INDEX_LOG_LEVEL": "WARNING"}),
        start("embedder_service", {"EMBEDDER_MODEL_DIR": str(find_bundle(args.model)),
                                   "EMBEDDER_PORT": str(ports["embedder"]), "EMBEDDER_LOG_LEVEL": "WARNING"}),
    ]
    try:
        wait_serving(i_addr, procs[0])
        wait_serving(e_addr, procs[1])
        with grpc.insecure_channel(e_addr) as ec, grpc.insecure_channel(
                i_addr, options=[("grpc.max_send_message_length", 64 << 20)]) as ic:
            info = embedder_pb2_grpc.EmbedderStub(ec).GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=30)
            index = index_pb2_grpc.IndexStub(ic)
            print(f"loading {args.rows:,} rows ...", flush=True)
            load(index, args.rows, info.model_id)
            index.BuildIndex(index_pb2.BuildIndexRequest(), timeout=3600)
        procs.append(start("gateway", {"GATEWAY_EMBEDDER_ADDR": e_addr, "GATEWAY_INDEX_ADDR": i_addr,
                                       "GATEWAY_PORT": str(ports["gateway"]), "GATEWAY_LOG_LEVEL": "WARNING"}))
        wait_ready(f"http://127.0.0.1:{ports['gateway']}", procs[-1])
        run_load(ports["gateway"], 2, 2.0, args.k)  # warm-up
        memory: list[dict[str, float]] = []
        stop = threading.Event()
        pids = {"index": procs[0].pid, "embedder": procs[1].pid, "gateway": procs[2].pid}
        sampler = threading.Thread(target=sample_memory, args=(pids, stop, memory), daemon=True)
        sampler.start()
        records = run_load(ports["gateway"], args.clients, args.seconds, args.k)
        stop.set()
        sampler.join()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    result = {"machine": common.machine(), "source": "bench.search_load", "rows": args.rows,
              "clients": args.clients, "seconds": args.seconds, "k": args.k,
              "precision": enum_word(embedder_pb2.Precision, info.precision),
              **summarize(records, memory, args.seconds, min(10.0, args.seconds / 5))}
    print(f"{args.clients} clients for {args.seconds:.0f} s at {args.rows:,} rows: {result['requests']} requests, "
          f"{result['errors']} errors, {result['requests_per_s']:.1f} req/s, p50 {result['p50_ms']:.1f} ms, "
          f"p99 {result['p99_ms']:.1f} ms")
    for name, g in result["memory_growth"].items():
        print(f"  {name}: RSS {g['first_mb']:.0f} -> {g['last_mb']:.0f} MB ({g['growth']:+.1%})")
    print(f"wrote {common.write('search_load', result)}")


if __name__ == "__main__":
    main()
