"""Growth curve of the index service with its default settings: recall, latency, load rates and sizes as rows grow.

`python -m bench.index [--sizes 30000,100000,300000] [--types float32,float16] [--ef-sweep 10,40,100]`
starts the real service (`python -m index_service` on its embedded Postgres + pgvector) per size and
vector type in a fresh data dir, with its default settings (the recall target on), except that exact
search is allowed at every size (INDEX_EXACT_MAX_ROWS=0). Per point, in one run:
- CreateCollection, then Upsert of clustered 512-d unit vectors with ~15 KB thumbnails announcing the
  load's size (expected_rows), so the service defers the index of the empty collection; rows/s.
- BuildIndex right after the load, as the loader does: its build_seconds is the build after a bulk load.
- the service's own recall estimate once its keeper has measured the built index (and widened the
  breadth until the target holds), then recall@10 against numpy's exact answer, p50/p99 at k=10 and
  k=100, a label filter (tags_any) and a one-tag tags_all filter with their recall, a few exact searches.
- 50 Stats calls, bytes per row (table, index), the Postgres processes' memory after the searches.
- Upsert into the indexed collection (same service session): the rows wait beside the graph; 60 searches
  while they wait (the service runs with INDEX_MERGE_IDLE_S=15 for that), then the seconds until it has
  handed them all to the graph (Stats.unindexed_rows back to 0) and the rate of that; as the reference,
  pgvector's own rate: plain INSERTs of as many other rows straight into the same indexed table, rolled back.
- optionally the ef sweep (the service restarted with each INDEX_HNSW_EF, same queries over gRPC).
- the time to SERVING with the orphan sweep due at start.
Prints a table after each point and writes bench/results/index.json (`--out`), also after each point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import free_port
from bench.index_data import (
    DIM,
    again,
    exact_top,
    growth_point,
    near,
    percentile,
    postgres_pss_bytes,
    raw_indexed_insert,
    recall,
    running,
    start_service,
    stop_service,
    timed_search,
    upsert,
)
from index_service.recall import SMALL as KEEPER_MIN_ROWS
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common.enums import enum_word

RESULTS = Path(__file__).resolve().parent / "results" / "index.json"
COLLECTION = "bench"
# The service waits this long after the last upsert before it hands waiting rows to the graph (default 1 s),
# so that searches can be timed while the rows upserted into the index still wait beside it.
MERGE_IDLE_S = 15
WAITING_QUERIES = 60
LABEL_FILTER = index_pb2.Filter(labels=["c1", "c2", "c3"])  # 3 of 257 labels: about 1.2 % of rows
TAG_FILTER = index_pb2.Filter(tags_all=["c7"])  # one tag: about 0.4 % of rows


def stats(stub: index_pb2_grpc.IndexStub) -> index_pb2.StatsResponse:
    """Stats of the benchmark's collection."""
    reply: index_pb2.StatsResponse = again(
        lambda: stub.Stats(index_pb2.StatsRequest(collection=COLLECTION), timeout=30), "stats")
    return reply


def load_and_build(stub: index_pb2_grpc.IndexStub, vecs: np.ndarray, labels: np.ndarray,
                   args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray]:
    """Bulk load into the empty collection, then BuildIndex at once (as the loader does); returns figures, ids."""
    rows_s, ids = upsert(stub, vecs, labels, args.batch, args.clients, expected_rows=len(vecs), collection=COLLECTION)
    deferred = stats(stub).index_state != index_pb2.INDEX_STATE_READY
    started = time.perf_counter()
    build = again(lambda: stub.BuildIndex(index_pb2.BuildIndexRequest(collection=COLLECTION), timeout=7200), "build")
    wall = time.perf_counter() - started
    return {"upsert_empty_rows_per_s": rows_s, "index_deferred_by_service": deferred,
            "index_build_s": build.build_seconds, "index_build_call_s": wall}, ids


def settle(stub: index_pb2_grpc.IndexStub, rows: int, since: float, limit_s: float,
           quiet_s: float) -> tuple[index_pb2.StatsResponse, float]:
    """Stats once the keeper has settled after `since` (epoch s): an estimate that holds the target (or the
    widest breadth), then no further measurement for `quiet_s` (the keeper measures again at once whenever
    it moved the breadth, narrower or wider)."""
    started = time.monotonic()
    seen, quiet_since = 0, started
    while True:
        reply = stats(stub)
        if reply.recall_measured_at != seen:
            seen, quiet_since = reply.recall_measured_at, time.monotonic()
        fresh = reply.recall_measured_at >= since and reply.recall_measured_at > 0
        holds = reply.recall_estimate >= reply.recall_target or reply.search_breadth >= 1000
        settled = fresh and holds and time.monotonic() - quiet_since > quiet_s
        if settled or rows < KEEPER_MIN_ROWS or time.monotonic() - started > limit_s:
            return reply, time.monotonic() - started
        time.sleep(2)


def merged(stub: index_pb2_grpc.IndexStub, limit_s: float) -> dict[str, Any]:
    """How many upserted rows waited beside the graph, the seconds until none did (INDEX_MERGE_IDLE_S
    included), and the rate of the hand-over itself (from the first batch seen handed over to the last)."""
    started = time.monotonic()
    waiting = left = stats(stub).unindexed_rows
    first: tuple[float, int] | None = None  # when the count first fell, and to what
    while left and time.monotonic() - started < limit_s:
        time.sleep(0.2)
        left = stats(stub).unindexed_rows
        if first is None and left < waiting:
            first = (time.monotonic(), left)
    done = time.monotonic()
    rate = first[1] / (done - first[0]) if first and done > first[0] and not left else None
    return {"unindexed_after_upsert": waiting, "merge_s": done - started, "merge_rows_per_s": rate}


def waiting_searches(stub: index_pb2_grpc.IndexStub, queries: np.ndarray) -> dict[str, Any]:
    """Search latency while the upserted rows still wait beside the graph (scanned exactly by each search)."""
    rows = stats(stub).unindexed_rows
    ms, _ = timed_search(stub, queries, collection=COLLECTION)
    still = stats(stub).unindexed_rows == rows  # no hand-over began meanwhile (MERGE_IDLE_S)
    return {"search_waiting_rows": rows if still else None, "search_waiting_p50_ms": percentile(ms, 50) if still
            else None, "search_waiting_p99_ms": percentile(ms, 99) if still else None}


def measure_searches(stub: index_pb2_grpc.IndexStub, vecs: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                     queries: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Latency and recall of the default search path: k=10, k=100, two filters, exact."""
    truth = exact_top(vecs, queries, ids)
    part = queries[: max(1, len(queries) // 3)]
    timed_search(stub, queries[:20], collection=COLLECTION)  # warm-up: caches, connections
    ms10, found = timed_search(stub, queries, collection=COLLECTION)
    ms100, found100 = timed_search(stub, part, k=100, collection=COLLECTION)
    out: dict[str, Any] = {
        "recall_at_10": recall(found, truth), "search_p50_ms": percentile(ms10, 50),
        "search_p99_ms": percentile(ms10, 99), "k100_p50_ms": percentile(ms100, 50),
        "k100_p99_ms": percentile(ms100, 99), "recall_at_100": recall(found100, exact_top(vecs, part, ids, k=100), 100)}
    for key, flt, mask in (("filtered", LABEL_FILTER, np.isin(labels, [1, 2, 3])),
                           ("tag_filtered", TAG_FILTER, labels == 7)):
        ms, hits = timed_search(stub, part, flt=flt, collection=COLLECTION)
        out |= {f"{key}_p50_ms": percentile(ms, 50), f"{key}_p99_ms": percentile(ms, 99),
                f"{key}_recall_at_10": recall(hits, exact_top(vecs, part, ids, mask=mask))}
    exact_ms, exact_ids = timed_search(stub, queries[: args.exact_queries], exact=True, collection=COLLECTION)
    out |= {"exact_p50_ms": percentile(exact_ms, 50), "exact_queries": len(exact_ms),
            "exact_matches_numpy": float(np.mean([set(e) == set(t) for e, t in zip(exact_ids, truth, strict=False)]))
            if exact_ids else None,
            "search_samples_ms": [round(x, 3) for x in ms10]}
    return out


def measure_stats(stub: index_pb2_grpc.IndexStub, rows: int, calls: int = 50) -> dict[str, Any]:
    """Latency of Stats (the page asks on every load), and the sizes and settings it reports."""
    stats(stub)  # warm-up
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        reply = stats(stub)
        times.append((time.perf_counter() - t) * 1000)
    return {"stats_p50_ms": percentile(times, 50), "stats_p99_ms": percentile(times, 99),
            "stats_estimated": reply.estimated, "stats_count": reply.count,
            "table_bytes_per_row": reply.table_bytes / rows, "index_bytes_per_row": reply.index_bytes / rows,
            # The HNSW graph must stay in memory for millisecond searches: its size per vector is the floor.
            "ram_bytes_per_row": reply.index_bytes / rows,
            "backend": f"{enum_word(index_pb2.Backend, reply.backend)} {reply.extension_version}",
            "index_params": dict(reply.index_params)}


def ef_sweep(data_dir: Path, port: int, queries: np.ndarray, truth: list[list[int]], efs: list[int]) -> list[Any]:
    """Recall@10 and latency per INDEX_HNSW_EF, the service restarted for each (the keeper is off then)."""
    sweep = []
    for ef in efs:
        with running(data_dir, port, ef) as stub:
            timed_search(stub, queries, collection=COLLECTION)  # warm-up: a restarted Postgres has cold buffers
            ms, found = timed_search(stub, queries, collection=COLLECTION)
        sweep.append({"ef_search": ef, "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
                      "mean_ms": float(np.mean(ms)), "recall_at_10": recall(found, truth)})
        print(f"  ef_search {ef}: recall@10 {sweep[-1]['recall_at_10']:.3f}, p50 {sweep[-1]['p50_ms']:.2f} ms",
              flush=True)
    return sweep


def serving_with_sweep_due(data_dir: Path, port: int) -> float:
    """Seconds from starting the service to SERVING with the media sweep due at once (orphan grace 0)."""
    started = time.perf_counter()
    proc = start_service(data_dir, port, INDEX_ORPHAN_GRACE_S="0")
    seconds = time.perf_counter() - started
    stop_service(proc)
    return seconds


def run_point(n: int, vector_type: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One point of the curve: n rows of one vector type in a fresh data dir."""
    vecs, labels, queries, rng = growth_point(n, args.queries)
    port, data_dir = free_port(), root / f"{vector_type}-{n}"
    efs = [int(e) for e in args.ef_sweep.split(",") if e]
    point: dict[str, Any] = {"rows": n, "vector_type": vector_type}
    try:
        with running(data_dir, port, INDEX_MERGE_IDLE_S=str(MERGE_IDLE_S)) as stub:
            stub.CreateCollection(index_pb2.CreateCollectionRequest(
                name=COLLECTION, model_id="bench@1", dim=DIM, vector_type=vector_type), timeout=60)
            built, ids = load_and_build(stub, vecs, labels, args)
            point |= built
            since = int(time.time()) if built["index_deferred_by_service"] else 0
            est, waited = settle(stub, n, since, args.settle_s, args.quiet_s)
            point |= {"recall_estimate": est.recall_estimate, "recall_target": est.recall_target,
                      "search_breadth": est.search_breadth, "recall_settle_s": waited}
            point |= measure_searches(stub, vecs, labels, ids, queries, args)
            point |= measure_stats(stub, n)
            point["postgres_pss_bytes"] = postgres_pss_bytes(data_dir)
            extra = near(rng, vecs[: args.indexed_rows], 0.1)
            point["upsert_indexed_rows_per_s"], extra_ids = upsert(stub, extra, labels, args.batch, args.clients,
                                                                   offset=n, collection=COLLECTION)
            point |= waiting_searches(stub, queries[:WAITING_QUERIES])
            point |= merged(stub, args.settle_s)
            part = slice(n // 2, n // 2 + args.indexed_rows)
            point["insert_indexed_raw_rows_per_s"] = raw_indexed_insert(  # other near-copies, rolled back
                data_dir, COLLECTION, near(rng, vecs[part], 0.1), labels[part], args.batch, args.clients)
        if efs:  # the truth now includes the rows upserted into the index
            truth = exact_top(np.vstack([vecs, extra]), queries, np.concatenate([ids, extra_ids]))
            point["ef_sweep"] = ef_sweep(data_dir, port, queries, truth, efs)
            point["ef_sweep_method"] = "service restarted per INDEX_HNSW_EF; same queries over gRPC"
        point["serving_with_sweep_due_s"] = serving_with_sweep_due(data_dir, port)
        point["load_average"] = os.getloadavg()[0]  # how busy the machine was: the figures are as noisy
        return point
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


COLUMNS = [("rows", "{:d}"), ("vector_type", "{}"), ("recall_at_10", "{:.3f}"), ("recall_estimate", "{:.3f}"),
           ("search_breadth", "{:d}"), ("search_p50_ms", "{:.2f}"), ("search_p99_ms", "{:.2f}"),
           ("k100_p99_ms", "{:.1f}"), ("filtered_p50_ms", "{:.2f}"), ("exact_p50_ms", "{:.0f}"),
           ("index_build_s", "{:.1f}"), ("upsert_empty_rows_per_s", "{:.0f}"), ("upsert_indexed_rows_per_s", "{:.0f}"),
           ("insert_indexed_raw_rows_per_s", "{:.0f}"), ("merge_rows_per_s", "{:.0f}"),
           ("search_waiting_p50_ms", "{:.2f}"),
           ("index_bytes_per_row", "{:.0f}"), ("table_bytes_per_row", "{:.0f}"), ("stats_p50_ms", "{:.1f}"),
           ("serving_with_sweep_due_s", "{:.1f}")]


def print_table(results: list[dict[str, Any]]) -> None:
    """The curve so far, one row per point ("—" where a figure is missing)."""
    print(" | ".join(c for c, _ in COLUMNS))
    for r in results:
        print(" | ".join("—" if r.get(c) is None else f.format(r[c]) for c, f in COLUMNS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="30000,100000,300000")
    parser.add_argument("--types", default="float32,float16")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exact-queries", type=int, default=10)
    parser.add_argument("--indexed-rows", type=int, default=4096, help="rows upserted after the build")
    parser.add_argument("--settle-s", type=float, default=1800, help="longest wait for the recall keeper")
    parser.add_argument("--quiet-s", type=float, default=150,
                        help="the keeper has settled once it measured nothing new for this long")
    parser.add_argument("--ef-sweep", default="", help="INDEX_HNSW_EF values to sweep per point (empty: none)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    machine = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    root = Path(tempfile.mkdtemp(prefix="bench-index-", dir="/tmp"))
    results: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            for vector_type in args.types.split(","):
                started = time.perf_counter()
                results.append(run_point(n, vector_type, args, root) | {"point_s": time.perf_counter() - started})
                print_table(results)
                args.out.write_text(json.dumps({
                    "machine": machine, "batch": args.batch, "clients": args.clients, "queries": args.queries,
                    "results": results}, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{machine}\nwrote {args.out}")


if __name__ == "__main__":
    main()
