"""Benchmark of filtered search: date ranges, tags and labels (and a date sort) against unfiltered search.

`python -m bench.filters [--rows 30000] [--queries 200] [--env NAME=VALUE ...]` starts the real service
(`python -m index_service` on its embedded Postgres + pgvector) in a fresh data dir, loads clustered 512-d
unit vectors whose photos were taken over ten years (a fifth without a capture time), each with a tag
t<i % 50> and a label c<0..256> drawn at random, builds the index, then sends the same query vectors,
interleaved so machine noise hits every kind alike, as: unfiltered k=10; a one-year date range (about 8%
of rows); a one-month range (about 0.7%); one tag (2%); one label's tag (0.4%); three labels (1.2%); each
filter once more with exact=true (the exact scan of the matching rows: what the service's exact plan
costs); and an unfiltered date sort (newest first) with the server's default cutoff (gap 0.05: on this
data fewer than k hits are that close) and with gap 0.2 (about the query's whole cluster, some 100 rows,
is relevant: the candidate fetch may grow past its first 100). Prints p50/p99 per kind with its ratio to
unfiltered, the recall@10 of the filtered kinds against a numpy exact answer, and how often fewer than k
rows came back; writes bench/results/filters.json. `--env` passes settings to the service (for example
INDEX_EXACT_FILTER_ROWS=0 to send every filter through the index, for comparison).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import free_port, machine, table, write
from bench.index_data import DIM, clustered, connect, start_service, stop_service
from protos.semsearch.v1 import common_pb2, index_pb2, index_pb2_grpc

START = 1_420_070_400  # 2015-01-01
YEAR, MONTH = 365 * 86_400, 30 * 86_400
SPAN = 10 * YEAR


def dates(rng: np.random.Generator, n: int) -> np.ndarray:
    """Capture times spread over ten years; -1 (none) for a fifth of the rows."""
    taken = START + rng.integers(0, SPAN, n)
    taken[rng.random(n) < 0.2] = -1
    return taken


def batch(vecs: np.ndarray, taken: np.ndarray, labels: np.ndarray, start: int, total: int) -> index_pb2.UpsertRequest:
    """Upsert items with a small thumbnail, a tag, a label and a capture time, in a load of `total` rows."""
    items = []
    for i in range(start, start + len(vecs)):
        original = f"filters-bench-{i}".encode() * 8
        facts = common_pb2.PhotoFacts(taken_at=int(taken[i - start])) if taken[i - start] >= 0 else None
        items.append(index_pb2.UpsertItem(
            sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
            thumbnail=b"\xff\xd8\xff" + bytes(500), width=640, height=480, tags=[f"t{i % 50}"], source="bench",
            label=f"c{labels[i - start]}",
            file_name=f"{i}.jpg", embedding=vecs[i - start].tolist(), model_id="bench@1", facts=facts))
    # A bulk load (expected_rows): the service builds the index after the rows, at BuildIndex.
    return index_pb2.UpsertRequest(items=items, expected_rows=total)


def load(stub: index_pb2_grpc.IndexStub, vecs: np.ndarray, taken: np.ndarray, labels: np.ndarray,
         size: int = 256) -> np.ndarray:
    """Upsert every row from two clients; returns the ids in row order."""
    def send(s: int) -> list[int]:
        res = stub.Upsert(batch(vecs[s:s + size], taken[s:s + size], labels[s:s + size], s, len(vecs)), timeout=300)
        assert all(not r.HasField("error") for r in res.results), res.results[0].error
        return [r.id for r in res.results]

    with ThreadPoolExecutor(2) as ex:
        return np.array([i for chunk in ex.map(send, range(0, len(vecs), size)) for i in chunk])


def kinds(lo_year: int, lo_month: int, taken: np.ndarray, labels: np.ndarray
          ) -> dict[str, tuple[dict[str, Any], np.ndarray | None]]:
    """The request variants measured: extra SearchRequest fields per kind, and the rows a filter keeps."""
    n = len(taken)
    tag = np.arange(n) % 50 == 7
    filtered: dict[str, tuple[index_pb2.Filter, np.ndarray]] = {
        "date_range_1y": (index_pb2.Filter(taken_from=lo_year, taken_until=lo_year + YEAR),
                          (taken >= lo_year) & (taken < lo_year + YEAR)),
        "date_range_1m": (index_pb2.Filter(taken_from=lo_month, taken_until=lo_month + MONTH),
                          (taken >= lo_month) & (taken < lo_month + MONTH)),
        "tag_2pct": (index_pb2.Filter(tags_all=["t7"]), tag),
        "label_tag_0.4pct": (index_pb2.Filter(tags_all=["c7"]), labels == 7),
        "labels_3": (index_pb2.Filter(labels=["c1", "c2", "c3"]), np.isin(labels, [1, 2, 3])),
    }
    out: dict[str, tuple[dict[str, Any], np.ndarray | None]] = {"unfiltered": ({}, None)}
    for name, (f, mask) in filtered.items():
        out[name] = ({"filter": f}, mask)
        out[f"{name}_exact"] = ({"filter": f, "exact": True}, mask)
    out["date_sort"] = ({"sort": index_pb2.SORT_DATE_DESC}, None)
    out["date_sort_gap_0.2"] = ({"sort": index_pb2.SORT_DATE_DESC, "cutoff": index_pb2.Cutoff(gap=0.2)}, None)
    return out


def truth(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, mask: np.ndarray) -> list[int]:
    """The exact top 10 ids among the rows a filter keeps."""
    scores = np.where(mask, vecs @ q, -np.inf)
    return [int(ids[i]) for i in np.argsort(-scores)[:10] if mask[i]]


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Load, build, then measure every kind on the same queries, interleaved."""
    rng = np.random.default_rng(args.rows)
    vecs = clustered(rng, args.rows, max(50, args.rows // 100))
    taken = dates(rng, args.rows)
    labels = rng.integers(0, 257, args.rows)
    port = free_port()
    proc = start_service(root, port, **dict(e.split("=", 1) for e in args.env))
    channel, stub = connect(port)
    try:
        started = time.perf_counter()
        ids = load(stub, vecs, taken, labels)
        load_s = time.perf_counter() - started
        build = stub.BuildIndex(index_pb2.BuildIndexRequest(), timeout=3600)
        queries = vecs[rng.integers(0, args.rows, args.queries)] + rng.standard_normal(
            (args.queries, DIM)).astype(np.float32) * (0.2 / np.sqrt(DIM))
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        variants = kinds(START + 4 * YEAR, START + 6 * YEAR, taken, labels)
        samples: dict[str, list[float]] = {k: [] for k in variants}
        short = dict.fromkeys(variants, 0)
        recall: dict[str, list[float]] = {k: [] for k, (_, mask) in variants.items() if mask is not None}
        for warm in (True, False):
            for q in queries[:20] if warm else queries:
                for name, (extra, mask) in variants.items():
                    t = time.perf_counter()
                    hits = stub.Search(index_pb2.SearchRequest(vector=q.tolist(), k=10, **extra), timeout=30).hits
                    if warm:
                        continue
                    samples[name].append((time.perf_counter() - t) * 1000)
                    short[name] += len(hits) < 10
                    if mask is not None:
                        want = truth(vecs, ids, q, mask)
                        recall[name].append(len({h.id for h in hits} & set(want)) / max(1, len(want)))
        base = float(np.percentile(samples["unfiltered"], 50))
        rows = [{"kind": name, "p50_ms": float(np.percentile(s, 50)), "p99_ms": float(np.percentile(s, 99)),
                 "p50_vs_unfiltered": float(np.percentile(s, 50)) / base, "short_results": short[name],
                 "recall_at_10": float(np.mean(recall[name])) if name in recall else None,
                 "matching_rows": _matching(args.rows, variants[name][1])}
                for name, s in samples.items()]
        return {"rows": args.rows, "queries": args.queries, "load_s": load_s, "index_build_s": build.build_seconds,
                "kinds": rows, "samples_ms": {k: [round(x, 3) for x in v] for k, v in samples.items()}}
    finally:
        channel.close()
        stop_service(proc)


def _matching(rows: int, mask: np.ndarray | None) -> int:
    return rows if mask is None else int(mask.sum())


def report_section(data: dict[str, Any]) -> str:
    """The Markdown section bench.report shows for this benchmark."""
    return "\n".join([
        "## Filters", "",
        f"{data['rows']:,} rows, {data['queries']} queries per kind, interleaved (ratios are to unfiltered, same run):",
        "", table(data["kinds"], ["kind", "matching_rows", "p50_ms", "p99_ms", "p50_vs_unfiltered", "recall_at_10",
                                  "short_results"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the service, for example INDEX_EXACT_FILTER_ROWS=0")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-filters-", dir="/tmp"))
    try:
        result = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["machine"] = machine()
    print(table(result["kinds"], ["kind", "matching_rows", "p50_ms", "p99_ms", "p50_vs_unfiltered", "recall_at_10",
                                  "short_results"]))
    print(f"\nload {result['load_s']:.1f} s, index build {result['index_build_s']:.1f} s; {result['machine']}")
    print(f"wrote {write('filters', result)}")


if __name__ == "__main__":
    main()
