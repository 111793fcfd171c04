"""Prometheus metrics of the index service's own domain (served on INDEX_METRICS_PORT when set).

RPC counts and latencies (index_requests_total, index_request_seconds) come from the platform's interceptor.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

UPSERTED = Counter("index_upserted_items", "Upserted items by outcome", ["outcome"])
DB_UP = Gauge("index_database_up", "1 while the database is reachable and migrated")
PG_RESTARTS = Counter("index_postgres_restarts", "Restarts of the embedded Postgres after its postmaster died")
ADOPTED = Counter("index_adopted_rows", "Prototype rows whose file was adopted, by outcome "
                  "(whole, duplicate, missing, unreadable)", ["outcome"])
THUMBNAILS_MOVED = Counter("index_thumbnails_moved", "Rows whose thumbnail moved from the database into the media "
                           "store, by outcome (moved; empty: the column held no bytes)", ["outcome"])
SEARCH_PLANS = Counter("index_search_plans", "Searches by how their candidates were found (index; exact: asked; "
                       "selective_filter: a filter kept few rows; index_ran_out: the graph found too few)", ["plan"])
