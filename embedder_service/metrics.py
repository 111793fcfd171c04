"""The embedder's own Prometheus metrics (served on EMBEDDER_METRICS_PORT when set).

RPC counts and latency (embedder_requests_total{method,code}, embedder_request_seconds) come from the
shared server's interceptor.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Histogram

ITEMS = Counter("embedder_items_total", "Images and texts handled", ["kind", "outcome"])
BATCH_SIZE = Histogram(
    "embedder_batch_size", "Items per inference batch", ["tower"], buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
STAGE_SECONDS = Histogram(
    "embedder_stage_seconds",
    "Time per stage: decode (per image), tokenize (per text), queue wait and inference (per batch)",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def batch_observer(tower: str) -> Callable[[int, float, float], None]:
    """A Batcher on_batch hook that records size, queue wait and inference time."""

    def observe(size: int, waited_s: float, ran_s: float) -> None:
        BATCH_SIZE.labels(tower).observe(size)
        STAGE_SECONDS.labels("queue").observe(waited_s)
        STAGE_SECONDS.labels(f"infer_{tower}").observe(ran_s)

    return observe
