"""bench.index_data's data, truth and recall (the growth curve's recall figures rest on them), and
bench.hnsw_params' binary COPY."""

from __future__ import annotations

from contextlib import closing

import numpy as np
import psycopg2

from bench.hnsw_params import copy_rows
from bench.index_data import clustered, exact_top, growth_point, near, recall


def test_exact_top_is_numpy_brute_force_in_service_ids_and_respects_the_mask() -> None:
    rng = np.random.default_rng(1)
    vecs = clustered(rng, 300, 5)
    queries = near(rng, vecs[:70], 0.2)  # more than one chunk of 32 queries
    ids = np.arange(1000, 1300)
    mask = np.arange(300) % 3 == 0
    full, masked = exact_top(vecs, queries, ids), exact_top(vecs, queries, ids, mask=mask)
    order = np.argsort(-(queries @ vecs.T), axis=1)
    assert full == [[int(ids[i]) for i in row[:10]] for row in order]
    assert masked == [[int(ids[i]) for i in row if mask[i]][:10] for row in order]


def test_recall_counts_the_share_of_each_exact_top_k_found() -> None:
    truth = [list(range(10)), list(range(10, 20))]
    assert recall([list(range(10)), list(range(10, 15)) + [99] * 5], truth) == 0.75
    assert recall([[1, 2]], [[1, 2, 3, 4]], k=10) == 0.5  # fewer than k exist: share of those


def test_the_growth_points_data_is_the_same_for_every_benchmark_that_draws_it() -> None:
    vecs, labels, queries, _ = growth_point(2000, 30)
    again_vecs, again_labels, again_queries, _ = growth_point(2000, 30)
    assert np.array_equal(vecs, again_vecs) and np.array_equal(labels, again_labels)
    assert np.array_equal(queries, again_queries) and queries.shape == (30, 512)
    assert 0 <= labels.min() and labels.max() <= 256


def test_hnsw_params_binary_copy_is_read_back_exactly_by_pgvector(pg_dsn: str) -> None:
    vecs, _, _, _ = growth_point(1000, 1)
    with closing(psycopg2.connect(pg_dsn)) as conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        cur.execute("CREATE TABLE t (id int, v vector(512))")
        copy_rows(cur, vecs[:7], 40)
        cur.execute("SELECT id, v::real[] FROM t ORDER BY id")
        rows = cur.fetchall()
    assert [r[0] for r in rows] == list(range(40, 47))
    got = np.array([r[1] for r in rows], dtype=np.float32)
    assert np.allclose(got, vecs[:7], rtol=0, atol=1e-7)  # text output: float4s to about 1 ulp
