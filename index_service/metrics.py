"""Prometheus metrics of the index service (served on INDEX_METRICS_PORT when set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("index_requests", "RPCs handled", ["method", "code"])
LATENCY = Histogram("index_request_seconds", "RPC latency", ["method"],
                    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
UPSERTED = Counter("index_upserted_items", "Upserted items by outcome", ["outcome"])
DB_UP = Gauge("index_database_up", "1 while the database is reachable and migrated")
