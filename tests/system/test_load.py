"""Load with every part a real process: 32 search clients for 60 s against 30,000 images through the gateway,
memory growth per service, and search latency while a loader runs. Writes bench/results/system_load.json."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bench import common
from index_service.pg import EmbeddedPostgres
from protos.semsearch.v1 import index_pb2
from tests.support.loading import loader_process
from tests.support.trees import encoded
from tests.system.procs import PG_SETTINGS, IndexClient, Service, embedder_service, gateway, index_service, model_id

pytestmark = pytest.mark.slow

ROWS = 30_000
DIM = 512
CLIENTS = 32
DURATION_S = 60.0
WINDOW_S = 10.0  # RSS is compared between the first and the last WINDOW_S of the run
MAX_RSS_GROWTH = 0.10
MIXED_CLIENTS = 8
MIXED_S = 12.0
MIXED_IMAGES = 3000
QUERIES = [f"a {a} {n}" for a in ("red", "small", "old", "wet", "shiny", "distant")
           for n in ("dog on a beach", "bicycle", "mountain lake", "city street", "cat", "lighthouse")]
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass
class Stack:
    """Postgres, index, embedder and gateway as processes, with ROWS images in the index."""

    pg: EmbeddedPostgres
    index: Service
    embedder: Service
    gateway: Service
    client: IndexClient
    load_rows_per_s: float = 0.0


def insert(client: IndexClient, rows: int, model: str, batch: int = 500) -> float:
    """Upsert `rows` clustered unit vectors with 200-byte thumbnails straight into the index; returns rows/s."""
    rng = np.random.default_rng(30)
    centres = rng.standard_normal((max(50, rows // 100), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def send(start: int) -> None:
        n = min(batch, rows - start)
        local = np.random.default_rng(start)
        vecs = centres[local.integers(0, len(centres), n)] + local.standard_normal((n, DIM)).astype(
            np.float32) * (0.35 / np.sqrt(DIM))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        items = []
        for j in range(n):
            original = f"system-load-{start + j}".encode()
            items.append(index_pb2.UpsertItem(
                sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
                thumbnail=local.bytes(200), width=640, height=480, label=f"c{(start + j) % 257}", source="load",
                file_name=f"{start + j}.jpg", embedding=vecs[j].tolist(), model_id=model))
        reply = client.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=300)
        assert not [r for r in reply.results if r.HasField("error")]

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(send, range(0, rows, batch)))
    return rows / (time.perf_counter() - started)


@pytest.fixture(scope="module")
def stack(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The services, and 30,000 rows loaded with the index built."""
    root = Path(tempfile.mkdtemp(prefix="system-load-pg-"))
    logs = tmp_path_factory.mktemp("load-logs")
    pg = EmbeddedPostgres(root, settings={**PG_SETTINGS, "synchronous_commit": "off"})
    services: list[Service] = []
    client: IndexClient | None = None
    try:
        pg.start()
        # Counted exactly up to a million rows: the test checks that the load loses and doubles nothing.
        index = index_service(pg, tmp_path_factory.mktemp("load-index"), logs, INDEX_DEFER_INDEX="true",
                              INDEX_LOG_LEVEL="WARNING", INDEX_HEALTH_INTERVAL_S="2", INDEX_STATS_EXACT_MAX="1000000")
        embedder = embedder_service(tiny_bundle_dir, logs)
        gw = gateway(embedder, index, logs)
        services = [index, embedder, gw]
        index.start()
        embedder.start()
        client = IndexClient(index.addr)
        rows_s = insert(client, ROWS, model_id(embedder))
        client.stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=600)
        assert client.count() == ROWS
        gw.start()
        yield Stack(pg, index, embedder, gw, client, rows_s)
    finally:
        if client is not None:
            client.close()
        for service in reversed(services):
            service.stop()
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Run:
    """What a group of search clients saw."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def summary(self) -> dict[str, float]:
        """p50/p90/p99/max (ms), requests/s, count and errors."""
        pct = common.percentiles(self.latencies) if self.latencies else {}
        return {**pct, "requests": len(self.latencies), "req_per_s": len(self.latencies) / self.seconds,
                "errors": len(self.errors)}


def search_clients(port: int, clients: int, seconds: float, max_requests: int = 100_000) -> Run:
    """`clients` threads, each sending text searches back to back for `seconds` (and at most max_requests)."""
    run, lock = Run(), threading.Lock()
    gate = threading.Barrier(clients + 1)

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        errors: list[str] = []
        gate.wait()
        end = time.monotonic() + seconds
        for i in range(max_requests):
            if time.monotonic() >= end:
                break
            q = QUERIES[(n * 7 + i) % len(QUERIES)]
            t = time.perf_counter()
            try:
                conn.request("GET", "/api/search?" + urllib.parse.urlencode({"q": q, "k": 24}))
                r = conn.getresponse()
                body = r.read()
                if r.status != 200 or len(json.loads(body)["hits"]) != 24:
                    errors.append(f"{r.status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException) as err:
                errors.append(repr(err))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t)
        conn.close()
        with lock:
            run.latencies.extend(mine)
            run.errors.extend(errors)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join(timeout=seconds + 60)
        assert not t.is_alive(), "a search client hung"
    run.seconds = time.perf_counter() - started
    return run


class RssSampler:
    """Samples each service's resident memory every `every_s` in a thread."""

    def __init__(self, services: dict[str, Service], every_s: float = 0.5) -> None:
        self.services, self.every_s = services, every_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.started, {n: s.rss() for n, s in self.services.items()}))
            self._stop.wait(self.every_s)

    def growth(self, name: str, window_s: float) -> tuple[float, float, float]:
        """Mean RSS (MB) over the first and the last window_s, and the relative growth between them."""
        end = self.samples[-1][0]
        first = [s[name] for t, s in self.samples if t <= window_s]
        last = [s[name] for t, s in self.samples if t >= end - window_s]
        a, b = float(np.mean(first)) / 2**20, float(np.mean(last)) / 2**20
        return a, b, b / a - 1


def _write(name: str, data: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def test_32_clients_for_60_s_without_errors_or_memory_growth(stack: Stack) -> None:
    port = stack.gateway.port
    search_clients(port, 4, 3.0)  # warm-up: sessions, connections, caches
    services = {"gateway": stack.gateway, "index": stack.index, "embedder": stack.embedder}
    with RssSampler(services) as rss:
        run = search_clients(port, CLIENTS, DURATION_S)
    memory = {}
    for name in services:
        first, last, growth = rss.growth(name, WINDOW_S)
        memory[name] = {"first_10s_mb": round(first, 1), "last_10s_mb": round(last, 1), "growth": round(growth, 4)}
    summary = run.summary
    print(f"\n{CLIENTS} clients x {run.seconds:.0f} s against {ROWS:,} images: p50 {summary['p50_ms']:.1f} ms, "
          f"p99 {summary['p99_ms']:.1f} ms, {summary['req_per_s']:.1f} requests/s, {summary['errors']} errors")
    for name, m in memory.items():
        print(f"  {name}: RSS {m['first_10s_mb']} MB -> {m['last_10s_mb']} MB ({m['growth']:+.1%})")
    path = _write("system_load", {
        "machine": common.machine(), "rows": ROWS, "clients": CLIENTS, "seconds": run.seconds,
        "model": "tiny random (tests)", "search": summary, "rss": memory,
        "load_rows_per_s": stack.load_rows_per_s, "first_errors": run.errors[:5],
    })
    print(f"  wrote {path}")
    assert not run.errors, run.errors[:5]
    assert summary["requests"] > CLIENTS * 10
    for name in ("gateway", "index"):
        assert memory[name]["growth"] < MAX_RSS_GROWTH, (name, memory[name])


def test_search_latency_while_a_load_runs(stack: Stack, tmp_path: Path) -> None:
    port = stack.gateway.port
    idle = search_clients(port, MIXED_CLIENTS, MIXED_S)
    root = tmp_path / "photos"
    for i in range(MIXED_IMAGES):
        path = root / f"set{i % 10}" / f"img_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded(200_000 + i, 64, 48))
    before = stack.client.count()
    proc = loader_process("dir", str(root), "--embedder", stack.embedder.addr, "--index", stack.index.addr,
                          "--progress", "none", "--retry-s", "30")
    try:
        deadline = time.monotonic() + 60
        while stack.client.count() == before:  # measure only once images are really flowing
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the loader stored nothing in 60 s"
            time.sleep(0.05)
        t0, rows0 = time.monotonic(), stack.client.count()
        mixed = search_clients(port, MIXED_CLIENTS, MIXED_S)
        overlap_s, loaded = time.monotonic() - t0, stack.client.count() - rows0
        still_loading = proc.poll() is None
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (out[-2000:], err[-2000:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert stack.client.count() == before + MIXED_IMAGES
    i, m = idle.summary, mixed.summary
    print(f"\n{MIXED_CLIENTS} clients: idle p50 {i['p50_ms']:.1f} / p99 {i['p99_ms']:.1f} ms ({i['req_per_s']:.1f}/s); "
          f"during a load ({loaded / overlap_s:.0f} images/s) p50 {m['p50_ms']:.1f} / p99 {m['p99_ms']:.1f} ms "
          f"({m['req_per_s']:.1f}/s)")
    path = RESULTS / "system_load.json"
    data = json.loads(path.read_text()) if path.exists() else {"machine": common.machine()}
    data["mixed"] = {"clients": MIXED_CLIENTS, "seconds": MIXED_S, "idle": i, "during_load": m,
                     "load_images_per_s": loaded / overlap_s, "loader_still_running_at_end": still_loading}
    _write("system_load", data)
    assert not idle.errors and not mixed.errors, (idle.errors[:5], mixed.errors[:5])
    assert loaded > 0, "the searches must overlap the load"
