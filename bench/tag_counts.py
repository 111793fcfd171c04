"""Benchmark of the tag counts' triggers: what they cost upserts, and what they save ListTags/ListLabels.

`python -m bench.tag_counts [--round-rows 3000] [--rounds 3] [--clients 4] [--sizes 100000,300000]` starts
an embedded Postgres and the real service (`python -m index_service`) on it, with INDEX_DEFER_INDEX on
so every collection stays without its HNSW index (the cheapest upsert, where a trigger's cost shows
most). Three collections take the same upserts from `--clients` threads, in rounds, their order rotating
so the machine's noise hits each alike: `counted` (the product: index_service.tag_counts' append-only
triggers), `plain` (its triggers dropped: no counts at all) and `in_place` (a bench-only variant that adds
each statement's change to one row per tag, INSERT … ON CONFLICT DO UPDATE in tag order: the design
not taken). Every item carries the popular tag "photo" and one of 50 others; one in ten carries none.

Then the same three, the database alone: `--sql-clients` connections each committing `--sql-rows`-row
INSERTs (same tags) as fast as they can, where the in-place variant's hot rows would make commits queue.
Then `counted` grows by SQL copies of its rows to each of `--sizes`, and ListLabels is timed both ways:
the query it ran before (a count of the untagged rows plus GROUP BY over unnest(tags): a full scan) and
the counts it reads now (SQL alone and the ListLabels/ListTags RPCs). Writes bench/results/tag_counts.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2

from bench.common import free_port, machine, table, write
from bench.index_data import DIM, connect, start_service, stop_service
from index_service import tag_counts
from index_service.pg import EmbeddedPostgres
from index_service.pool import one_row
from protos.semsearch.v1 import index_pb2, index_pb2_grpc

KINDS = ("counted", "plain", "in_place")
THUMB_BYTES = 3_000  # thumbnails go to the media store, not the rows: their size does not change the old scan
OLD_LABELS = ["SELECT count(*) FROM {t} WHERE tags = '{{}}'",
              'SELECT tag, count(*) FROM {t}, unnest(tags) AS tag GROUP BY tag ORDER BY tag COLLATE "C"']
IN_PLACE = [
    'CREATE TABLE in_place_counts (collection text, tag text COLLATE "C", n bigint NOT NULL, '
    "PRIMARY KEY (collection, tag))",
    "CREATE FUNCTION in_place_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO in_place_counts (collection, tag, n) SELECT TG_ARGV[0], t.tag, count(*) FROM new_rows AS r, "
    "unnest(CASE WHEN cardinality(r.tags) = 0 THEN ARRAY[''] ELSE r.tags END) AS t(tag) GROUP BY t.tag "
    "ORDER BY t.tag ON CONFLICT (collection, tag) DO UPDATE SET n = in_place_counts.n + excluded.n; "
    "RETURN NULL; END $$",
]


def batch(rng: np.random.Generator, start: int, size: int, kind: str) -> index_pb2.UpsertRequest:
    """`size` new items of one collection (its own originals), tagged as the module says."""
    vecs = rng.standard_normal((size, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = []
    for i in range(size):
        original = f"tags-{kind}-{start + i}".encode()
        n = start + i
        items.append(index_pb2.UpsertItem(
            sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
            thumbnail=os.urandom(THUMB_BYTES), width=640, height=480, source="bench", file_name=f"{n}.jpg",
            embedding=vecs[i].tolist(), model_id="bench@1", tags=[] if n % 10 == 0 else ["photo", f"t{n % 50}"]))
    return index_pb2.UpsertRequest(items=items, collection=kind)


def load(stub: index_pb2_grpc.IndexStub, kind: str, start: int, rows: int, size: int, clients: int) -> float:
    """Upsert `rows` new rows into `kind` from `clients` threads; rows/s (batches made before the clock)."""
    rng = np.random.default_rng(start)
    requests = [batch(rng, s, min(size, start + rows - s), kind) for s in range(start, start + rows, size)]

    def send(req: index_pb2.UpsertRequest) -> None:
        res = stub.Upsert(req, timeout=600)
        assert all(not r.HasField("error") for r in res.results), res.results[0].error

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(send, requests))
    return rows / (time.perf_counter() - started)


def prepare(dsn: str, stub: index_pb2_grpc.IndexStub) -> None:
    """The three collections; `plain` without triggers, `in_place` with the bench's variant."""
    for kind in KINDS:
        stub.CreateCollection(index_pb2.CreateCollectionRequest(name=kind, model_id="bench@1", dim=DIM), timeout=60)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for statement in IN_PLACE:
            cur.execute(statement)
        for kind in ("plain", "in_place"):
            for suffix in ("ins", "upd", "del"):
                cur.execute(f"DROP TRIGGER images_{kind}_tags_{suffix} ON images_{kind}")
        cur.execute("CREATE TRIGGER images_in_place_tags_ins AFTER INSERT ON images_in_place REFERENCING NEW "
                    "TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION in_place_change('in_place')")


def sql_rate(dsn: str, kind: str, clients: int, rows: int, seconds: float) -> float:
    """Rows/s of `clients` connections each committing `rows`-row INSERTs into `kind` for `seconds`."""
    vector = "[" + ",".join(["0.044"] * DIM) + "]"
    statement = (f"INSERT INTO images_{kind} (sha256, v, model_id, tags) SELECT encode(sha256(convert_to("
                 "gen_random_uuid()::text, 'UTF8')), 'hex'), %s, 'bench@1', CASE WHEN g %% 10 = 0 THEN '{}' "
                 "ELSE ARRAY['photo', 't' || (g %% 50)] END FROM generate_series(1, %s) AS g")
    stop = time.monotonic() + seconds

    def work(_: int) -> int:
        done = 0
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            while time.monotonic() < stop:
                cur.execute(statement, (vector, rows))
                conn.commit()
                done += rows
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        total = sum(ex.map(work, range(clients)))
    return total / (time.perf_counter() - started)


def grow(dsn: str, table: str, size: int) -> None:
    """Copy rows of `table` (new sha256s, ids from the sequence) until it holds `size` rows."""
    columns = ("v, label, source, file_name, width, height, content_type, size_bytes, model_id, thumbnail, "
               "tags, file_mtime_ns")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        while True:
            cur.execute(f"SELECT count(*) FROM {table}")
            have = one_row(cur)[0]
            if have >= size:
                return
            cur.execute(f"INSERT INTO {table} (sha256, {columns}) SELECT encode(sha256(convert_to("
                        f"gen_random_uuid()::text, 'UTF8')), 'hex'), {columns} FROM {table} LIMIT %s",
                        (size - have,))
            conn.commit()


def timed_ms(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall times of `repeat` calls, in ms."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def list_times(dsn: str, stub: index_pb2_grpc.IndexStub, size: int, repeat: int) -> dict[str, Any]:
    """ListLabels the old way and the new, on `counted` at `size` rows; checks they agree."""
    table = "images_counted"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM tag_counts WHERE collection = 'counted'")
    rows_before = one_row(cur)[0]
    first = timed_ms(lambda: stub.ListLabels(index_pb2.ListLabelsRequest(collection="counted"), timeout=60), 1)[0]
    cur.execute("SELECT count(*) FROM tag_counts WHERE collection = 'counted'")
    rows_after = one_row(cur)[0]

    def old() -> list[tuple[str, int]]:
        cur.execute(OLD_LABELS[0].format(t=table))
        untagged = int(one_row(cur)[0])
        cur.execute(OLD_LABELS[1].format(t=table))
        return [("", untagged)] + [(str(t), int(n)) for t, n in cur.fetchall()]

    old_ms = timed_ms(old, max(3, repeat // 4))
    new_sql = timed_ms(lambda: tag_counts.counts(cur, "counted"), repeat)
    rpc = timed_ms(lambda: stub.ListLabels(index_pb2.ListLabelsRequest(collection="counted"), timeout=60), repeat)
    tags_rpc = timed_ms(lambda: stub.ListTags(index_pb2.ListTagsRequest(collection="counted"), timeout=60), repeat)
    labels = stub.ListLabels(index_pb2.ListLabelsRequest(collection="counted"), timeout=60).labels
    assert [(lb.label, lb.count) for lb in labels] == old(), "the counts differ from a scan"
    conn.close()
    return {"rows": size, "old_scan_ms": statistics.median(old_ms), "new_sql_ms": statistics.median(new_sql),
            "list_labels_rpc_ms": statistics.median(rpc), "list_tags_rpc_ms": statistics.median(tags_rpc),
            "speedup": statistics.median(old_ms) / statistics.median(new_sql),
            "first_rpc_ms": first, "count_rows_before_fold": rows_before, "count_rows_after": rows_after}


def summary(rates: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Per collection: median rows/s and the median of its per-round ratios to `plain` (the machine's load
    drifts between rounds more than the kinds differ within one)."""
    return [{"collection": k, "median_rows_s": statistics.median(v),
             "vs_plain": statistics.median(x / p for x, p in zip(v, rates["plain"], strict=True)),
             "rounds_rows_s": [round(x, 1) for x in v]} for k, v in rates.items()]


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Upsert rounds over the three collections, then ListLabels timings at each size."""
    pg = EmbeddedPostgres(root / "pg")
    dsn = pg.start()
    port = free_port()
    proc = start_service(root / "data", port, INDEX_DSN=dsn, INDEX_DEFER_INDEX="true")
    channel, stub = connect(port)
    try:
        prepare(dsn, stub)
        rates: dict[str, list[float]] = {k: [] for k in KINDS}
        load(stub, "plain", 10**9, args.batch * args.clients, args.batch, args.clients)  # warm-up, not counted
        for r in range(args.rounds):
            for kind in KINDS[r % 3:] + KINDS[:r % 3]:
                rates[kind].append(load(stub, kind, r * args.round_rows, args.round_rows, args.batch, args.clients))
                print(f"round {r + 1}: {kind} {rates[kind][-1]:.0f} rows/s", flush=True)
        upserts = summary(rates)
        sql: dict[str, list[float]] = {k: [] for k in KINDS}
        for r in range(args.rounds):  # the database alone: small transactions, where a hot row would queue
            for kind in KINDS[r % 3:] + KINDS[:r % 3]:
                sql[kind].append(sql_rate(dsn, kind, args.sql_clients, args.sql_rows, args.sql_seconds))
                print(f"sql round {r + 1}: {kind} {sql[kind][-1]:.0f} rows/s", flush=True)
        inserts = summary(sql)
        listing = []
        for size in sorted({args.rounds * args.round_rows, *args.sizes}):
            grow(dsn, "images_counted", size)
            listing.append(list_times(dsn, stub, size, args.repeat))
            print(f"{size} rows: old {listing[-1]['old_scan_ms']:.1f} ms, new {listing[-1]['new_sql_ms']:.2f} ms",
                  flush=True)
        return {"round_rows": args.round_rows, "rounds": args.rounds, "clients": args.clients, "batch": args.batch,
                "upserts": upserts, "sql_clients": args.sql_clients, "sql_rows": args.sql_rows,
                "sql_inserts": inserts, "list_labels": listing}
    finally:
        channel.close()
        stop_service(proc)
        pg.stop()


UPSERT_COLUMNS = ["collection", "median_rows_s", "vs_plain", "rounds_rows_s"]
LIST_COLUMNS = ["rows", "old_scan_ms", "new_sql_ms", "list_labels_rpc_ms", "list_tags_rpc_ms", "speedup",
                "first_rpc_ms", "count_rows_before_fold", "count_rows_after"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-rows", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--sql-clients", type=int, default=8)
    parser.add_argument("--sql-rows", type=int, default=10)
    parser.add_argument("--sql-seconds", type=float, default=10.0)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100_000, 300_000])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-tag-counts-", dir="/tmp"))
    try:
        result = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["machine"] = machine()
    print(table(result["upserts"], UPSERT_COLUMNS))
    print(f"\nthe database alone: {result['sql_clients']} connections, {result['sql_rows']}-row transactions")
    print(table(result["sql_inserts"], UPSERT_COLUMNS))
    print()
    print(table(result["list_labels"], LIST_COLUMNS))
    print(f"\n{result['machine']}")
    print(f"wrote {write('tag_counts', result)}")


if __name__ == "__main__":
    main()
