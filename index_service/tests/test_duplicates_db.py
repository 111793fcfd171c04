"""FindDuplicates on the real index server and embedded Postgres, with planted near-copies."""

from __future__ import annotations

import numpy as np

from index_service import duplicates
from index_service.pool import run_tx
from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, clustered, item, near_copies


def load(index: Running, vecs: np.ndarray) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(vecs), 200):
        items = [item(v, f"k{start + n}") for n, v in enumerate(vecs[start:start + 200])]
        ids += [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=60).results]
    return ids


def scan_all(index: Running, max_distance: float, limit: int) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Every group of a whole scan, and (scanned, total) after each page."""
    groups, progress, after = [], [], 0
    while True:
        page = index.stub.FindDuplicates(index_pb2.FindDuplicatesRequest(
            max_distance=max_distance, after_id=after, limit=limit), timeout=60)
        groups += [[m.image.id for m in g.members] for g in page.groups]
        progress.append((page.scanned, page.total))
        if page.done:
            return groups, progress
        after = page.last_id


def exact_groups(vecs: np.ndarray, ids: list[int], max_distance: float) -> set[frozenset[int]]:
    """Connected components of the all-pairs graph within max_distance (numpy)."""
    close = (1.0 - vecs @ vecs.T) <= max_distance + duplicates.ROUNDING
    parent = list(range(len(vecs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(*np.nonzero(np.triu(close, 1)), strict=True):
        parent[root(int(a))] = root(int(b))
    comps: dict[int, set[int]] = {}
    for i in range(len(vecs)):
        comps.setdefault(root(i), set()).add(ids[i])
    return {frozenset(c) for c in comps.values() if len(c) > 1}


def test_planted_near_copies_are_found_through_the_index_page_by_page(index: Running) -> None:
    rng = np.random.default_rng(13)
    base = clustered(rng, 800, 40)  # CLIP-like: neighbours within a cluster lie at about 0.11
    picks = rng.choice(800, 40, replace=False)
    copies = near_copies(rng, base[picks], rng.uniform(0.005, 0.03, 40))
    chain = near_copies(rng, copies[:5], np.full(5, 0.03))  # five groups of three: a copy of a copy
    vecs = np.concatenate([base, copies, chain])
    ids = load(index, vecs)
    truth = exact_groups(vecs, ids, 0.05)
    assert len(truth) == 40 and sum(len(g) == 3 for g in truth) == 5
    found, progress = scan_all(index, 0.05, 150)
    assert {frozenset(g) for g in found} == truth
    assert len(found) == len(truth), "each group once"
    assert all(g[0] == min(g) for g in found)
    assert [s for s, _ in progress] == sorted(s for s, _ in progress) and progress[-1] == (845, 845)
    assert len(progress) == 6  # 845 images, 150 per page


def test_the_neighbour_query_runs_through_the_hnsw_index(index: Running) -> None:
    rng = np.random.default_rng(14)
    load(index, clustered(rng, 300, 10))
    repo = index.deps.repo
    c = repo.collection("", 10)

    def plan(cur: object) -> str:
        cur.execute("SET LOCAL enable_seqscan = off")  # type: ignore[attr-defined]
        sql = "EXPLAIN " + duplicates.neighbour_sql(c.table, repo.dialect)
        cur.execute(sql, ([1, 2, 3], 0.05))  # type: ignore[attr-defined]
        return "\n".join(r[0] for r in cur.fetchall())  # type: ignore[attr-defined]

    text = run_tx(repo.pool, plan, 10)
    assert f"Index Scan using {c.index}" in text and "Order By: (v <=> a.v)" in text
    assert f"{c.table}_unindexed" in text  # the rows the graph has not taken in, beside it


def test_a_loose_distance_is_cut_at_max_group(index: Running) -> None:
    rng = np.random.default_rng(15)
    load(index, clustered(rng, 200, 1, spread=0.2))  # one tight cluster: everything within 0.5
    page = index.stub.FindDuplicates(index_pb2.FindDuplicatesRequest(max_distance=0.5, limit=200), timeout=60)
    assert page.groups and page.groups[0].truncated
    assert all(len(g.members) <= duplicates.MAX_GROUP for g in page.groups)
