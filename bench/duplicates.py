"""Benchmark of the near-duplicate scan: recall of planted near-copies and time, against exact answers.

`python -m bench.duplicates [--rows 30000] [--planted 1000]` starts the real index service (embedded
Postgres + pgvector, bulk-load switch on), loads CLIP-like clustered 512-d unit vectors through Upsert
(`--rows` in all, `--planted` of them near-copies of other rows at cosine distance 0.005..0.04), builds
the HNSW index and walks the whole collection with FindDuplicates (`--limit` images per page,
`--max-distance`), at the service's default INDEX_HNSW_EF and again per `--ef-sweep` value. In the same
run: numpy's exact all-pairs answer over every row (the ground truth: connected components of all pairs
within max_distance), and Postgres's exact scan (SearchSimilar with exact=true) over a sample of rows,
extrapolated to the collection. Prints a table and writes
bench/results/duplicates.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, free_port, machine, table
from bench.index_data import DIM, clustered, connect, start_service, stop_service
from protos.semsearch.v1 import index_pb2, index_pb2_grpc

OUT = RESULTS / "duplicates.json"


def plant(rng: np.random.Generator, rows: int, planted: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`rows` vectors, the last `planted` of them near-copies of distinct earlier rows; the planted pairs."""
    base = clustered(rng, rows - planted, max(50, rows // 100))
    sources = rng.choice(len(base), planted, replace=False)
    distances = rng.uniform(0.005, 0.04, planted)
    src = base[sources]
    noise = rng.standard_normal(src.shape).astype(np.float32)
    noise -= (noise * src).sum(axis=1, keepdims=True) * src  # orthogonal: cos = 1 / sqrt(1 + |noise|^2)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = src + noise * np.sqrt(1.0 / (1.0 - distances) ** 2 - 1.0)[:, None]
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    vecs = np.concatenate([base, copies.astype(np.float32)])
    return vecs, [(int(s), len(base) + n) for n, s in enumerate(sources)]


def load(stub: index_pb2_grpc.IndexStub, vecs: np.ndarray, batch: int) -> tuple[list[int], float]:
    """Upsert every row (small originals, no thumbnails); the ids in row order and the rows/s."""
    ids: list[int] = []
    started = time.perf_counter()
    for s in range(0, len(vecs), batch):
        items = []
        for i in range(s, min(s + batch, len(vecs))):
            original = f"dup-bench-{i}".encode()
            items.append(index_pb2.UpsertItem(sha256=hashlib.sha256(original).hexdigest(), original=original,
                                              content_type="image/jpeg", embedding=vecs[i].tolist(),
                                              model_id="bench@1", file_name=f"{i}.jpg"))
        ids += [r.id for r in stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=600).results]
    return ids, len(vecs) / (time.perf_counter() - started)


def scan(stub: index_pb2_grpc.IndexStub, max_distance: float, limit: int) -> tuple[list[list[int]], list[float]]:
    """Walk the collection page by page; every group's ids and each page's seconds."""
    groups: list[list[int]] = []
    seconds: list[float] = []
    after = 0
    while True:
        started = time.perf_counter()
        page = stub.FindDuplicates(index_pb2.FindDuplicatesRequest(max_distance=max_distance, after_id=after,
                                                                   limit=limit), timeout=600)
        seconds.append(time.perf_counter() - started)
        groups += [[m.image.id for m in g.members] for g in page.groups]
        if page.done:
            return groups, seconds
        after = page.last_id


def exact_components(vecs: np.ndarray, max_distance: float, block: int = 1024) -> tuple[list[set[int]], int]:
    """Connected components (rows) of all pairs within max_distance, by blocked matrix products; and the pairs."""
    parent = list(range(len(vecs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = 0
    for s in range(0, len(vecs), block):
        close = (1.0 - vecs[s:s + block] @ vecs.T) <= max_distance + 1e-6
        for a, b in zip(*np.nonzero(close), strict=True):
            if s + a < b:
                pairs += 1
                parent[root(s + int(a))] = root(int(b))
    comps: dict[int, set[int]] = {}
    for i in range(len(vecs)):
        comps.setdefault(root(i), set()).add(i)
    return [c for c in comps.values() if len(c) > 1], pairs


def exact_sample(stub: index_pb2_grpc.IndexStub, ids: list[int], exact: bool) -> list[float]:
    """Seconds of one neighbour query per id through SearchSimilar (17 nearest, as the scan asks)."""
    out = []
    for image_id in ids:
        started = time.perf_counter()
        stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=image_id, k=17, exact=exact), timeout=120)
        out.append(time.perf_counter() - started)
    return out


def recall(groups: list[list[int]], ids: list[int], planted: list[tuple[int, int]]) -> float:
    """Share of planted pairs (rows) whose two images are in one reported group."""
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    group_of: dict[int, set[int]] = {}
    for g in groups:
        for image_id in g:
            group_of.setdefault(row_of[image_id], set()).update(row_of[i] for i in g)
    return sum(b in group_of.get(a, ()) for a, b in planted) / len(planted)


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Load, build, scan (then again per --ef-sweep value), and compare with the exact answers."""
    rng = np.random.default_rng(args.seed)
    vecs, planted = plant(rng, args.rows, args.planted)
    port = free_port()
    proc = start_service(root / "data", port)
    channel, stub = connect(port)
    try:
        ids, rows_s = load(stub, vecs, args.batch)
        build = stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=3600)
        ef = dict(stub.Stats(index_pb2.StatsRequest(), timeout=30).index_params).get("ef_search", "")
        exact_sample(stub, ids[:20], exact=False)  # warm-up: caches, connections
        started = time.perf_counter()
        groups, page_s = scan(stub, args.max_distance, args.limit)
        scan_s = time.perf_counter() - started
        sample = [ids[i] for i in rng.choice(len(ids), args.exact_sample, replace=False)]
        exact_s = exact_sample(stub, sample, exact=True)
        ann_s = exact_sample(stub, sample, exact=False)
    finally:
        channel.close()
        stop_service(proc)
    sweep = []
    for value in (int(e) for e in args.ef_sweep.split(",") if e):
        proc = start_service(root / "data", port, value)
        channel, stub = connect(port)
        try:
            exact_sample(stub, ids[:20], exact=False)
            started = time.perf_counter()
            found, _ = scan(stub, args.max_distance, args.limit)
            sweep.append({"ef_search": value, "scan_s": time.perf_counter() - started,
                          "planted_recall": recall(found, ids, planted)})
            print(f"  ef_search {value}: recall {sweep[-1]['planted_recall']:.3f}, {sweep[-1]['scan_s']:.1f} s",
                  flush=True)
        finally:
            channel.close()
            stop_service(proc)
    started = time.perf_counter()
    comps, exact_pairs = exact_components(vecs, args.max_distance)
    numpy_s = time.perf_counter() - started
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    truth = {frozenset(c) for c in comps}
    reported = [frozenset(row_of[i] for i in g) for g in groups]
    comp_of = {r: frozenset(c) for c in comps for r in c}
    return {
        "rows": args.rows, "planted_pairs": args.planted, "max_distance": args.max_distance, "limit": args.limit,
        "ef_search": ef, "upsert_rows_per_s": rows_s, "index_build_s": build.build_seconds,
        "scan_s": scan_s, "pages": len(page_s), "page_p50_ms": float(np.percentile(page_s, 50) * 1000),
        "page_p99_ms": float(np.percentile(page_s, 99) * 1000), "scan_ms_per_image": scan_s * 1000 / args.rows,
        "planted_recall": recall(groups, ids, planted),
        "groups_reported": len(groups), "groups_exact": len(truth), "exact_pairs": exact_pairs,
        "groups_identical_to_exact": sum(g in truth for g in reported) / max(1, len(truth)),
        "members_outside_their_exact_group": sum(len(g - comp_of.get(next(iter(g)), frozenset())) for g in reported),
        "images_in_two_groups": sum(c - 1 for c in _counts(reported).values() if c > 1),
        "numpy_all_pairs_s": numpy_s,
        "pg_exact_ms_per_image": float(np.mean(exact_s) * 1000), "pg_ann_ms_per_image": float(np.mean(ann_s) * 1000),
        "pg_exact_scan_projected_s": float(np.mean(exact_s)) * args.rows,
        "exact_sample": args.exact_sample, "ef_sweep": sweep,
    }


def _counts(groups: list[frozenset[int]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for g in groups:
        for r in g:
            counts[r] = counts.get(r, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--planted", type=int, default=1_000)
    parser.add_argument("--max-distance", type=float, default=0.05)
    parser.add_argument("--limit", type=int, default=500, help="images per FindDuplicates page")
    parser.add_argument("--batch", type=int, default=500, help="rows per Upsert")
    parser.add_argument("--exact-sample", type=int, default=50, help="rows timed with Postgres's exact scan")
    parser.add_argument("--ef-sweep", default="40",
                        help="INDEX_HNSW_EF values to scan again with (service restarted on the same data)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-dups-", dir="/tmp"))
    try:
        r = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        {"what": "FindDuplicates, whole collection (HNSW)", "seconds": f"{r['scan_s']:.1f}",
         "per image ms": f"{r['scan_ms_per_image']:.2f}", "planted recall": f"{r['planted_recall']:.3f}"},
        {"what": "Postgres exact scan (sampled, projected)", "seconds": f"{r['pg_exact_scan_projected_s']:.1f}",
         "per image ms": f"{r['pg_exact_ms_per_image']:.2f}", "planted recall": "1 (exact)"},
        {"what": "numpy all pairs (in memory, ground truth)", "seconds": f"{r['numpy_all_pairs_s']:.1f}",
         "per image ms": f"{r['numpy_all_pairs_s'] * 1000 / r['rows']:.2f}", "planted recall": "1 (exact)"},
    ]
    print(table(rows, list(rows[0])))
    print(f"\n{r['rows']:,} rows, {r['planted_pairs']:,} planted pairs, max_distance {r['max_distance']}, "
          f"ef_search {r['ef_search']}, {r['pages']} pages of {r['limit']} "
          f"(p50 {r['page_p50_ms']:.0f} ms, p99 {r['page_p99_ms']:.0f} ms); "
          f"groups {r['groups_reported']} reported / {r['groups_exact']} exact "
          f"({r['groups_identical_to_exact']:.3f} identical), exact scan / scan = "
          f"{r['pg_exact_scan_projected_s'] / r['scan_s']:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "dim": DIM, **r}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
