"""What the index benchmarks share: CLIP-like data, the service as a process, upserts, timed searches, truth.

bench.index (the growth curve), bench.duplicates and bench.filters start the real index service
(`python -m index_service` on its embedded Postgres + pgvector) through `start_service` and load it with
`clustered` unit vectors carrying ~15 KB thumbnails.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import psutil
import psycopg2

from index_service.pool import one_row
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common import channels

T = TypeVar("T")
DIM = 512
THUMB_BYTES = 15_000
K = 10


def clustered(rng: np.random.Generator, n: int, clusters: int) -> np.ndarray:
    """CLIP-like data: unit vectors around random centres."""
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * (
        0.35 / np.sqrt(DIM))
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def growth_point(n: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """The vectors, labels (0..256) and query vectors of the growth curve's point of n rows (seeded by n),
    and the generator for what the point draws next."""
    rng = np.random.default_rng(n)
    vecs = clustered(rng, n, max(50, n // 100))
    labels = rng.integers(0, 257, n)
    return vecs, labels, near(rng, vecs[rng.integers(0, n, queries)], 0.2), rng


def near(rng: np.random.Generator, vecs: np.ndarray, scale: float) -> np.ndarray:
    """Unit vectors near `vecs` (noise of `scale` in total norm): queries, or re-upserted copies."""
    out = vecs + rng.standard_normal(vecs.shape).astype(np.float32) * (scale / np.sqrt(DIM))
    unit: np.ndarray = out / np.linalg.norm(out, axis=1, keepdims=True)
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


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait (the service stops its embedded Postgres)."""
    proc.terminate()
    proc.wait(timeout=60)


@contextmanager
def running(data_dir: Path, port: int, ef: int | None = None, **extra: str) -> Iterator[index_pb2_grpc.IndexStub]:
    """The service on data_dir (see start_service) and a stub to it, stopped on leaving."""
    proc = start_service(data_dir, port, ef, **extra)
    channel, stub = connect(port)
    try:
        yield stub
    finally:
        channel.close()
        if proc.poll() is None:
            stop_service(proc)


def connect(port: int) -> tuple[grpc.Channel, index_pb2_grpc.IndexStub]:
    """A channel and stub to the service on port."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    return channel, index_pb2_grpc.IndexStub(channel)


def again(call: Callable[[], T], what: str) -> T:
    """A repeatable call, retried on UNAVAILABLE as the project's clients retry: the service's connections age
    out every few minutes (max_connection_age), and a call sent just then can be refused."""
    return channels.retry(call, what, channels.Backoff(60.0))


def make_batch(vecs: np.ndarray, start: int, labels: np.ndarray, expected_rows: int = 0,
               collection: str = "") -> index_pb2.UpsertRequest:
    """One UpsertRequest of rows start.. with 15 KB random thumbnails and labels c<label>."""
    items = []
    for i in range(start, start + len(vecs)):
        original = f"bench-original-{i}".encode() * 8
        items.append(index_pb2.UpsertItem(
            sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
            thumbnail=os.urandom(THUMB_BYTES), width=640, height=480, label=f"c{labels[i - start]}",
            source="bench", file_name=f"{i}.jpg", embedding=vecs[i - start].tolist(), model_id="bench@1"))
    return index_pb2.UpsertRequest(items=items, expected_rows=expected_rows, collection=collection)


def upsert(stub: index_pb2_grpc.IndexStub, vecs: np.ndarray, labels: np.ndarray, batch: int, clients: int,
           offset: int = 0, expected_rows: int = 0, collection: str = "") -> tuple[float, np.ndarray]:
    """Upsert everything in batches from `clients` threads; returns rows/s (request building included), ids."""

    def send(s: int) -> list[int]:
        req = make_batch(vecs[s:s + batch], offset + s, labels[s:s + batch], expected_rows, collection)
        res = again(lambda: stub.Upsert(req, timeout=600), "upsert")
        assert all(not r.HasField("error") for r in res.results), res.results[0].error
        return [r.id for r in res.results]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        ids = [i for chunk in ex.map(send, range(0, len(vecs), batch)) for i in chunk]
    return len(vecs) / (time.perf_counter() - started), np.array(ids)


def raw_indexed_insert(data_dir: Path, collection: str, vecs: np.ndarray, labels: np.ndarray, batch: int,
                       clients: int) -> float:
    """pgvector's own insert rate into the collection's indexed table: rows/s of plain INSERTs of the same
    shape (vector, label, tag) from `clients` connections straight to the service's Postgres, in batches of
    `batch`, each connection's rows rolled back at the end. No gRPC, no files, no commit, and the statements
    are formatted before the clock starts: the ceiling the service's upserts into an indexed collection
    could reach on this machine."""
    dsn = f"host=127.0.0.1 port={postmaster(data_dir)[3]} user=postgres dbname=postgres"
    rows = [(-1 - i, f"raw-{i}", f"c{labels[i]}", "bench@1", [f"c{labels[i]}"],
             "[" + ",".join(f"{x:.7g}" for x in vecs[i]) + "]") for i in range(len(vecs))]
    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM collections WHERE name = %s", (collection,))
        head = f"INSERT INTO {one_row(cur)[0]} (id, sha256, label, model_id, tags, v) VALUES "
        batches = [cur.mogrify(head + ",".join(["(%s, %s, %s, %s, %s, %s)"] * len(part)), [v for r in part for v in r])
                   for part in (rows[s:s + batch] for s in range(0, len(rows), batch))]

    def insert(share: list[bytes]) -> None:
        with closing(psycopg2.connect(dsn)) as conn:
            try:
                with conn.cursor() as cur:
                    for statement in share:
                        cur.execute(statement)
            finally:
                conn.rollback()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(insert, [batches[c::clients] for c in range(clients)]))
    return len(vecs) / (time.perf_counter() - started)


def timed_search(stub: index_pb2_grpc.IndexStub, queries: np.ndarray, k: int = K, exact: bool = False,
                 flt: index_pb2.Filter | None = None, collection: str = "") -> tuple[list[float], list[list[int]]]:
    """Latency (ms) and hit ids of one Search per query, one after another."""
    times, found = [], []
    for q in queries:
        req = index_pb2.SearchRequest(vector=q.tolist(), k=k, exact=exact, filter=flt, collection=collection)

        def once(req: index_pb2.SearchRequest = req) -> tuple[index_pb2.SearchResponse, float]:
            t = time.perf_counter()
            reply = stub.Search(req, timeout=600)
            return reply, (time.perf_counter() - t) * 1000  # the answered attempt's time alone

        reply, ms = again(once, "search")
        times.append(ms)
        found.append([h.id for h in reply.hits])
    return times, found


def exact_top(vecs: np.ndarray, queries: np.ndarray, ids: np.ndarray, mask: np.ndarray | None = None,
              k: int = K) -> list[list[int]]:
    """Exact top-k ids by numpy (among the rows where `mask` holds), in chunks of queries to bound memory."""
    rows = np.arange(len(vecs)) if mask is None else np.flatnonzero(mask)
    pool = vecs[rows]
    out: list[list[int]] = []
    for s in range(0, len(queries), 32):
        scores = queries[s:s + 32] @ pool.T
        top = np.argpartition(-scores, min(k, len(rows) - 1), axis=1)[:, :k]
        for row, cand in zip(scores, top, strict=True):
            best = cand[np.argsort(-row[cand])]
            out.append([int(ids[rows[i]]) for i in best])
    return out


def recall(found: list[list[int]], truth: list[list[int]], k: int = K) -> float:
    """Mean share of each exact top k that the search found."""
    return float(np.mean([len(set(a) & set(t)) / min(k, max(len(t), 1)) for a, t in zip(found, truth, strict=True)]))


def postmaster(data_dir: Path) -> list[str]:
    """The lines of the service's Postgres' postmaster.pid: pid, data directory, start time, port, ..."""
    return (data_dir / "postgres" / "pgdata" / "postmaster.pid").read_text().split("\n")


def postgres_pss_bytes(data_dir: Path) -> int | None:
    """Proportional set size of the service's Postgres (postmaster and backends): shared buffers counted once."""
    try:
        pid = int(postmaster(data_dir)[0])
        procs = [main := psutil.Process(pid), *main.children(recursive=True)]
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    total = 0
    for p in procs:
        try:
            total += int(p.memory_full_info().pss)
        except psutil.NoSuchProcess:  # a backend that ended meanwhile holds nothing any more
            continue
        except psutil.Error:
            return None
    return total


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile of samples (NaN for none)."""
    return float(np.percentile(samples, q)) if samples else float("nan")
