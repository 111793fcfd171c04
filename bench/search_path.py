"""Where a search's time goes: the service's Search over gRPC against the same SQL sent straight to Postgres.

`python -m bench.search_path [--rows 30000] [--queries 300] [--ef 100]` starts the real index service
(its own process and embedded Postgres + pgvector, INDEX_HNSW_EF fixed so both paths search the same
breadth), bulk-loads bench.index's vectors of that size, builds the index, then times, one query after
another on the same queries:
- `grpc_search`: Search over gRPC, as a client sees it; `server_mean_ms`, the mean the service's own
  RPC histogram recorded for those calls (from its interceptor's start to its end, on INDEX_METRICS_PORT),
  and `search_ms`, the time the service reports for its database work;
- `sql_service`: the statements the service sends for that search (`filters.plan` and `filters.fetch`:
  pgvector's settings, the hit columns and the distance) in one message, straight from this process
  through psycopg2;
- `service_code`: the service's own search code (the collection looked up and `filters.search`, each
  message carrying its statement timeout as pool.run_read sends them) run in this process's one thread
  on one connection: the SQL and Python of a search without gRPC, the thread pool or the connection pool;
- `sql_id_only`: the bare query of the graph (ef_search, `SELECT id ... WHERE NOT unindexed ... LIMIT 10`, the
  partial index's predicate), as bench.hnsw_params times it;
- `grpc_health`: a Health.Check on the same server, the floor of any call.
The gap between `grpc_search` and `sql_service` is the service's own cost per search. Writes
bench/results/search_path.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.common import free_port, machine, table, write
from bench.index_data import growth_point, percentile, postmaster, running, upsert
from index_service import catalog, filters
from index_service.dialects import PgVector
from index_service.domain import SearchQuery
from index_service.pool import TimedCursor
from protos.semsearch.v1 import index_pb2

COLLECTION = "bench"
WARM_UP = 50


def timed(calls: list[Callable[[], Any]]) -> dict[str, float]:
    """p50 / p99 / mean in ms of each call, after the first WARM_UP of them (repeated) as warm-up."""
    for call in calls[:WARM_UP]:
        call()
    times = []
    for call in calls:
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "mean_ms": float(np.mean(times))}


def server_seconds(metrics_port: int) -> tuple[float, float]:
    """The service's Search histogram so far: (seconds summed, calls); (0, 0) before the first Search."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("index_request_seconds_sum", "index_request_seconds_count") and \
                    sample.labels.get("method") == "Search":
                found[sample.name] = sample.value
    return found.get("index_request_seconds_sum", 0.0), found.get("index_request_seconds_count", 0.0)


def sql_path(dsn: str, table_name: str, queries: np.ndarray, ef: int) -> dict[str, dict[str, float]]:
    """The bare query, the service's statements and its search code, on one autocommit connection as the
    service reads (each message its own implicit transaction: pool.run_read)."""
    dialect = PgVector()
    plans = [filters.plan(dialect, table_name, SearchQuery(vector=q, k=10), ef, 10) for q in queries]
    out = {}
    with closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        plain = conn.cursor()
        timed_cur = conn.cursor(cursor_factory=TimedCursor)
        timed_cur.each = True

        def bare(literal: str) -> None:
            plain.execute(f"SET LOCAL hnsw.ef_search = {ef}; "
                          f"SELECT id FROM {table_name} WHERE NOT unindexed ORDER BY v <=> %s::vector LIMIT 10",
                          (literal,))
            plain.fetchall()

        def statements(p: filters.Plan) -> None:
            filters.fetch(plain, p, exact=False)  # its settings and query, as the service sends them

        def code(q: np.ndarray) -> None:
            timed_cur.deadline = time.monotonic() + 10  # each statement carries it, as in run_read
            c = catalog.resolve(timed_cur, COLLECTION)
            filters.search(timed_cur, dialect, c.table, SearchQuery(vector=q, k=10), ef, 1000, (None, None))

        out["sql_id_only"] = timed([partial(bare, dialect.literal(q)) for q in queries])
        out["sql_service"] = timed([partial(statements, p) for p in plans])
        out["service_code"] = timed([partial(code, q) for q in queries])
    return out


def run_bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Load, build, then time the five paths."""
    vecs, labels, queries, _ = growth_point(args.rows, args.queries)
    port, metrics_port = free_port(), free_port()
    result: dict[str, Any] = {"rows": args.rows, "ef_search": args.ef, "queries": len(queries)}
    with running(root, port, args.ef, INDEX_METRICS_PORT=str(metrics_port)) as stub:
        stub.CreateCollection(index_pb2.CreateCollectionRequest(name=COLLECTION, model_id="bench@1",
                                                                dim=vecs.shape[1]), timeout=60)
        upsert(stub, vecs, labels, 256, 2, expected_rows=len(vecs), collection=COLLECTION)
        stub.BuildIndex(index_pb2.BuildIndexRequest(collection=COLLECTION), timeout=7200)
        reported: list[float] = []

        def search(q: np.ndarray) -> None:
            reply = stub.Search(index_pb2.SearchRequest(vector=q.tolist(), k=10, collection=COLLECTION), timeout=60)
            reported.append(reply.search_ms)

        before = server_seconds(metrics_port)
        result["grpc_search"] = timed([partial(search, q) for q in queries])
        total, calls = (a - b for a, b in zip(server_seconds(metrics_port), before, strict=True))
        result["grpc_search"]["server_mean_ms"] = 1000 * total / calls  # its warm-up calls included
        result["grpc_search"]["search_ms_p50"] = percentile(reported[WARM_UP:], 50)
        result["grpc_search"]["search_ms_mean"] = float(np.mean(reported[WARM_UP:]))
        with closing(grpc.insecure_channel(f"127.0.0.1:{port}")) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = partial(health.Check, health_pb2.HealthCheckRequest(), timeout=10)
            result["grpc_health"] = timed([check] * len(queries))
        dsn = f"host=127.0.0.1 port={postmaster(root)[3]} user=postgres dbname=postgres"
        with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute("SELECT table_name FROM collections WHERE name = %s", (COLLECTION,))
            table_name = cur.fetchone()[0]  # type: ignore[index]
        result |= sql_path(dsn, table_name, queries, args.ef)
    result["service_ms"] = result["grpc_search"]["p50_ms"] - result["sql_service"]["p50_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ef", type=int, default=100, help="INDEX_HNSW_EF of the service and the SQL paths")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-search-path-", dir="/tmp"))
    try:
        result = run_bench(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["machine"] = machine()
    rows = [{"path": name, **{k: f"{v:.2f}" for k, v in result[name].items()}}
            for name in ("grpc_search", "service_code", "sql_service", "sql_id_only", "grpc_health")]
    print(table(rows, ["path", "p50_ms", "p99_ms", "mean_ms"]))
    print(f"\n{result['rows']:,} rows, ef_search {result['ef_search']}: the service's own cost per search "
          f"{result['service_ms']:.2f} ms (Search p50 less the same SQL's); it reports "
          f"{result['grpc_search']['search_ms_p50']:.2f} ms in its database work; {result['machine']}")
    g = result["grpc_search"]
    print(f"means: the client waits {g['mean_ms']:.2f} ms, the service's RPC span {g['server_mean_ms']:.2f} ms, "
          f"its database work {g['search_ms_mean']:.2f} ms")
    print(f"wrote {write('search_path', result)}")


if __name__ == "__main__":
    main()
