"""HNSW build parameters at size: build time, index bytes, and recall@10 and p50 per ef_search against numpy.

`python -m bench.hnsw_params [--rows 1000000] [--m 16] [--ef-construction 128] [--efs 100,200,400,800,1000]
[--binary]`
starts an embedded Postgres + pgvector tuned as the service tunes it, loads a table of ids and vectors
only (binary COPY: no thumbnails, no upsert path), builds the cosine HNSW index with the given m and
ef_construction (build memory and parallel workers as the service sizes them; with --binary, the index
is on the vectors' sign bits by Hamming distance and a query re-ranks its ef_search candidates by exact
cosine distance), then sends the queries at
each ef_search and compares their top 10 with numpy's exact answer. The vectors and queries are those
of bench.index's point of the same size (same seed, same query count): its growth curve measures the
service's defaults, this measures what other build parameters would give, to choose them from numbers
(index_service/builds.py). Writes bench/results/hnsw_params.json.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2

from bench.common import free_port, machine, table, write
from bench.index_data import DIM, exact_top, growth_point, percentile, recall
from index_service import pgtune
from index_service.pg import EmbeddedPostgres
from index_service.pool import one_row

CHUNK = 100_000  # rows per COPY statement
# PostgreSQL's binary COPY: a row is a field count, then each field's length and big-endian bytes;
# pgvector's binary vector is its dimension, an unused int16 and the float4s.
ROW = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i4"), ("v_len", ">i4"), ("dim", ">i2"),
                ("unused", ">i2"), ("v", ">f4", (DIM,))])
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"


def copy_rows(cur: Any, vecs: np.ndarray, start: int) -> None:
    """One binary COPY of vecs as rows start.. of table t."""
    rows = np.zeros(len(vecs), dtype=ROW)
    rows["fields"], rows["id_len"], rows["v_len"], rows["dim"] = 2, 4, 4 + 4 * DIM, DIM
    rows["id"] = np.arange(start, start + len(vecs))
    rows["v"] = vecs
    cur.copy_expert("COPY t (id, v) FROM STDIN WITH (FORMAT binary)", io.BytesIO(HEADER + rows.tobytes() + TRAILER))


# The query at one ef_search: the cosine graph's top 10, or (--binary) the Hamming graph's ef_search
# candidates re-ranked by exact cosine distance.
QUERY = "SELECT id FROM t ORDER BY v <=> %(q)s::vector LIMIT 10"
BINARY_QUERY = (f"SELECT id FROM (SELECT id, v FROM t ORDER BY binary_quantize(v)::bit({DIM}) <~> "
                f"binary_quantize(%(q)s::vector) LIMIT %(ef)s) c ORDER BY v <=> %(q)s::vector LIMIT 10")


def measure(cur: Any, queries: np.ndarray, truth: list[list[int]], ef: int, sql: str) -> dict[str, Any]:
    """recall@10 and latency of the queries at one ef_search (20 warm-up queries first)."""
    cur.execute(f"SET hnsw.ef_search = {int(ef)}")
    cur.execute("SET enable_seqscan = off")
    times, found = [], []
    for i, q in enumerate([*queries[:20], *queries]):
        literal = "[" + ",".join(f"{x:.7g}" for x in q) + "]"
        started = time.perf_counter()
        cur.execute(sql, {"q": literal, "ef": ef})
        ids = [r[0] for r in cur.fetchall()]
        if i >= 20:
            times.append((time.perf_counter() - started) * 1000)
            found.append(ids)
    return {"ef_search": ef, "recall_at_10": recall(found, truth), "p50_ms": percentile(times, 50),
            "p99_ms": percentile(times, 99)}


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Load, build, then measure every ef_search."""
    n = args.rows
    vecs, _, queries, _ = growth_point(n, args.queries)  # bench.index's point of this size
    truth = exact_top(vecs, queries, np.arange(n))
    workers = pgtune.build_workers()
    pg = EmbeddedPostgres(root, port=free_port(), settings=pgtune.server_settings())
    dsn = pg.start()
    try:
        with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            cur.execute(f"CREATE TABLE t (id int, v vector({DIM}))")
            started = time.perf_counter()
            for s in range(0, n, CHUNK):
                copy_rows(cur, vecs[s:s + CHUNK], s)
            load_s = time.perf_counter() - started
            memory = pgtune.build_memory(n, DIM, args.m)
            cur.execute(f"SET maintenance_work_mem = '{memory}'")
            cur.execute(f"SET max_parallel_maintenance_workers = {workers}")
            started = time.perf_counter()
            keyed = f"(binary_quantize(v)::bit({DIM})) bit_hamming_ops" if args.binary else "v vector_cosine_ops"
            cur.execute(f"CREATE INDEX t_v ON t USING hnsw ({keyed}) "
                        f"WITH (m = {int(args.m)}, ef_construction = {int(args.ef_construction)})")
            build_s = time.perf_counter() - started
            cur.execute("SELECT pg_relation_size('t_v')")
            index_bytes = int(one_row(cur)[0])
            sql = BINARY_QUERY if args.binary else QUERY
            curve = [measure(cur, queries, truth, ef, sql) for ef in (int(e) for e in args.efs.split(","))]
    finally:
        pg.stop()
    return {"rows": n, "binary": args.binary, "m": args.m, "ef_construction": args.ef_construction,
            "build_workers": workers, "maintenance_work_mem": memory, "load_s": load_s, "index_build_s": build_s,
            "index_bytes_per_row": index_bytes / n, "queries": len(queries), "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--efs", default="100,200,400,800,1000")
    parser.add_argument("--binary", action="store_true",
                        help="index binary_quantize(v) by Hamming distance; re-rank ef_search candidates exactly")
    parser.add_argument("--queries", type=int, default=300, help="bench.index's count: the same queries")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-hnsw-", dir="/tmp"))
    try:
        result = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["machine"] = machine()
    print(table(result["curve"], ["ef_search", "recall_at_10", "p50_ms", "p99_ms"]))
    print(f"\n{result['rows']:,} rows, m {result['m']}, ef_construction {result['ef_construction']}: load "
          f"{result['load_s']:.0f} s, build {result['index_build_s']:.0f} s ({result['build_workers']} workers, "
          f"{result['maintenance_work_mem']}), index {result['index_bytes_per_row']:.0f} B/row; {result['machine']}")
    print(f"wrote {write('hnsw_params', result)}")


if __name__ == "__main__":
    main()
