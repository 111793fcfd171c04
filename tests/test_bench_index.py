"""bench.index_data's truth and recall: the growth curve's recall figures rest on them."""

from __future__ import annotations

import numpy as np

from bench.index_data import clustered, exact_top, near, recall


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
