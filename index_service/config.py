"""Settings of the index service, read once from INDEX_… environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from index_service import pgtune
from semsearch_common.config import ConfigError, Env
from semsearch_common.logs import FORMATS, LEVELS

__all__ = ["LIBPQ_VARS", "Config", "ConfigError", "HnswParams"]

# libpq reads these itself; any of them set means "use that server, not an embedded one".
LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


@dataclass(frozen=True)
class HnswParams:
    """HNSW build and search parameters (ef: lantern's index ef, pgvector's hnsw.ef_search)."""

    m: int = 16
    ef_construction: int = 0  # 0: chosen from the collection's size at each build (builds.params)
    ef: int = 100


@dataclass(frozen=True)
class Config:
    """Every knob of the service; see index_service/README.md for the variables."""

    host: str = "127.0.0.1"
    port: int = 50052
    dsn: str | None = None  # None: embedded Postgres under data_dir
    data_dir: Path = Path("data/index")
    backend: str = "auto"
    dim: int = 512
    hnsw: HnswParams = field(default_factory=HnswParams)
    defer_index: bool = False
    pool_size: int = 8
    workers: int = 16
    max_message_mb: int = 64
    max_k: int = 1000
    max_batch: int = 1024
    norm_tolerance: float = 1e-3
    synchronous_commit: bool = True
    # "auto": sized from the collection at each build (index_service.pgtune.build_memory).
    maintenance_work_mem: str = "auto"
    build_workers: int = field(default_factory=pgtune.build_workers)
    # Searches keep this recall@10 (0 = off: ef stays INDEX_HNSW_EF); measured on a sample in the background.
    # Off by default when INDEX_HNSW_EF is set: an explicit breadth is a fixed one.
    target_recall: float = 0.98
    recall_queries: int = 50
    recall_interval_s: float = 3600.0
    recall_budget_s: float = 120.0
    vector_type: str = "float32"  # of new collections; float16 halves the vectors and the index
    connect_timeout_s: int = 5
    health_interval_s: float = 2.0
    orphan_grace_s: float = 3600.0
    metrics_port: int = 0
    grace_s: float = 5.0
    # Seconds of NOT_SERVING before the server stops taking calls, so balancers move away first.
    drain_s: float = 0.0
    # The time budget of a call whose client set no deadline (BuildIndex excepted).
    default_deadline_s: float = 120.0
    pg_port: int = 0
    pg_stop_on_exit: bool = True
    log_level: str = "INFO"
    log_format: str = "text"
    # Stats counts exactly up to this many rows and estimates above (see index_service/sizes.py).
    stats_exact_max: int = 10_000
    # exact=true is refused above this many rows (0: never): 1.2 s warm, 5.6 s cold at 300,000 here.
    exact_max_rows: int = 500_000
    # A filter the planner expects to keep at most this many rows, and at most this share of the collection,
    # is answered by an exact scan of those rows (0: never): the graph's iterative scan misses neighbours
    # of a selective filter (issue 14), and an exact scan costs about 4 us per matching row on 2 cores.
    exact_filter_rows: int = 20_000
    exact_filter_share: float = 0.05
    # The media sweep: files looked at per step, pause between steps (it runs off the health thread).
    sweep_batch: int = 500
    sweep_pause_s: float = 0.05
    # Bulk loads: an upsert announcing this many rows into an empty collection defers its index (0: never),
    # built once upserts pause this long.
    bulk_min_rows: int = 10_000
    bulk_idle_s: float = 30.0
    # Upserts into an indexed collection: at most this many rows wait beside the graph, scanned exactly by
    # searches, until the background hands them to the graph in batches once upserts pause (0: none wait;
    # index_service/merger.py).
    unindexed_max_rows: int = 5_000
    merge_batch: int = 256
    merge_idle_s: float = 1.0
    # The embedded Postgres: tuned from the machine unless pg_tune is off; pg_settings override either.
    pg_tune: bool = True
    pg_settings: tuple[tuple[str, str], ...] = ()
    # Searches go to this streaming replica when set; the primary stands in while it is away.
    read_dsn: str | None = None
    read_retry_s: float = 5.0
    read_max_lag_s: float = 0.0  # 0: searches take the replica as it is
    # Where the prototype's stored paths resolve when its folder now lives elsewhere (None: as stored).
    prototype_root: Path | None = None
    adopt_batch: int = 32  # adopted rows made whole per transaction
    # The relevance cutoff of a date-sorted search that asks for none (see README: relative, per query).
    date_cutoff_gap: float = 0.05
    date_cutoff_fraction: float = 0.0  # 0: no fraction bound
    # Rows from before issue 14 hold their thumbnail in the database: move them into the media store.
    move_thumbnails: bool = True

    @property
    def media_dir(self) -> Path:
        """Root of the content-addressed media store."""
        return self.data_dir / "media"

    @property
    def embedded(self) -> bool:
        """Whether the service runs its own Postgres."""
        return self.dsn is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read INDEX_… variables (and libpq PG… variables); raises ConfigError naming a bad one."""
        env = os.environ if env is None else env
        r = Env("INDEX", env)
        dsn = r.raw("dsn")
        if dsn is None and any(env.get(v) for v in LIBPQ_VARS):
            dsn = ""  # an empty DSN makes libpq take everything from PG… variables
        hnsw = HnswParams(
            m=r.int("hnsw_m", 16, 2, 100),
            ef_construction=r.int("hnsw_ef_construction", 0, 0, 400),
            ef=r.int("hnsw_ef", 100, 1, 400),
        )
        if 0 < hnsw.ef_construction < max(4, 2 * hnsw.m):  # pgvector refuses the build; say so at start
            raise ConfigError(f"{r.name('hnsw_ef_construction')}={hnsw.ef_construction}: must be 0 (chosen from the "
                              f"collection's size) or at least {max(4, 2 * hnsw.m)} (twice {r.name('hnsw_m')})")
        return cls(
            host=r.str("host", "127.0.0.1"),
            port=r.int("port", 50052, 0, 65535),
            dsn=dsn,
            data_dir=r.path("data_dir", Path("data/index")),
            backend=r.str("backend", "auto", ("auto", "lantern", "pgvector")),
            dim=r.int("dim", 512, 1, 2000),
            hnsw=hnsw,
            defer_index=r.bool("defer_index", False),
            pool_size=r.int("pool_size", 8, 1, 200),
            workers=r.int("workers", 16, 1, 512),
            max_message_mb=r.int("max_message_mb", 64, 4, 2047),
            max_k=r.int("max_k", 1000, 1, 1000),
            max_batch=r.int("max_batch", 1024, 1, 100_000),
            norm_tolerance=r.float("norm_tolerance", 1e-3, 0.0, 0.5),
            synchronous_commit=r.bool("synchronous_commit", True),
            maintenance_work_mem=r.str("maintenance_work_mem", "auto"),
            build_workers=r.int("build_workers", pgtune.build_workers(), 0, 64),
            target_recall=r.float("target_recall", 0.0 if r.raw("hnsw_ef") else 0.98, 0.0, 0.999),
            recall_queries=r.int("recall_queries", 50, 1, 10_000),
            recall_interval_s=r.float("recall_interval_s", 3600.0, 1.0, 1e7),
            recall_budget_s=r.float("recall_budget_s", 120.0, 0.1, 86_400),
            vector_type=r.str("vector_type", "float32", ("float32", "float16")),
            connect_timeout_s=r.int("connect_timeout_s", 5, 1, 300),
            health_interval_s=r.float("health_interval_s", 2.0, 0.05, 3600),
            orphan_grace_s=r.float("orphan_grace_s", 3600.0, 0.0, 1e9),
            metrics_port=r.int("metrics_port", 0, 0, 65535),
            grace_s=r.float("grace_s", 5.0, 0.0, 3600),
            drain_s=r.float("drain_s", 0.0, 0.0, 600),
            default_deadline_s=r.float("default_deadline_s", 120.0, 1.0, 86_400),
            pg_port=r.int("pg_port", 0, 0, 65535),
            pg_stop_on_exit=r.bool("pg_stop_on_exit", True),
            log_level=r.str("log_level", "INFO", LEVELS),
            log_format=r.str("log_format", "text", FORMATS),
            stats_exact_max=r.int("stats_exact_max", 10_000, 0, 10_000_000),
            exact_max_rows=r.int("exact_max_rows", 500_000, 0, 2**62),
            exact_filter_rows=r.int("exact_filter_rows", 20_000, 0, 2**62),
            exact_filter_share=r.float("exact_filter_share", 0.05, 0.0, 1.0),
            sweep_batch=r.int("sweep_batch", 500, 1, 1_000_000),
            sweep_pause_s=r.float("sweep_pause_s", 0.05, 0.0, 60.0),
            bulk_min_rows=r.int("bulk_min_rows", 10_000, 0, 2**62),
            unindexed_max_rows=r.int("unindexed_max_rows", 5_000, 0, 1_000_000),
            merge_batch=r.int("merge_batch", 256, 1, 100_000),
            merge_idle_s=r.float("merge_idle_s", 1.0, 0.0, 3600.0),
            bulk_idle_s=r.float("bulk_idle_s", 30.0, 0.1, 86_400),
            pg_tune=r.bool("pg_tune", True),
            pg_settings=_pg_settings(r),
            read_dsn=r.raw("read_dsn"),
            read_retry_s=r.float("read_retry_s", 5.0, 0.1, 3600),
            read_max_lag_s=r.float("read_max_lag_s", 0.0, 0.0, 86_400),
            prototype_root=r.path("prototype_root", Path()) if r.raw("prototype_root") else None,
            adopt_batch=r.int("adopt_batch", 32, 1, 1000),
            date_cutoff_gap=r.float("date_cutoff_gap", 0.05, 0.0, 2.0),
            date_cutoff_fraction=r.float("date_cutoff_fraction", 0.0, 0.0, 1.0),
            move_thumbnails=r.bool("move_thumbnails", True),
        )


def _pg_settings(r: Env) -> tuple[tuple[str, str], ...]:
    raw = r.str("pg_settings", "")
    try:
        return tuple(pgtune.parse_settings(raw).items())
    except ValueError as err:
        raise ConfigError(f"{r.name('pg_settings')}={raw!r}: {err}") from None
