"""Postgres settings from the machine and from INDEX_PG_SETTINGS, and build memory from the collection."""

from __future__ import annotations

import psycopg2
import pytest

from index_service import builds, pgtune
from index_service.config import Config, ConfigError, HnswParams
from tests.support.pg import FAST_SETTINGS, scratch_postgres

GB = pgtune.GB


def test_server_settings_follow_the_machine() -> None:
    small, large = pgtune.server_settings(4 * GB, 2), pgtune.server_settings(64 * GB, 16)
    assert (small["shared_buffers"], small["effective_cache_size"]) == ("1024MB", "2048MB")
    assert (large["shared_buffers"], large["max_parallel_maintenance_workers"]) == ("16384MB", "7")
    assert small["max_parallel_maintenance_workers"] == "1" and small["max_wal_size"] == "2048MB"
    assert pgtune.build_workers(1) == 0


def test_build_memory_grows_with_the_collection_within_the_machine() -> None:
    # 380,000 512-d vectors outgrew 1 GB in the measurement: the sizing must give them more.
    assert int(pgtune.build_memory(380_000, 512, 16, 24 * GB).removesuffix("MB")) > 1024
    assert pgtune.build_memory(1_000, 512, 16, 24 * GB) == "64MB"  # the floor
    assert pgtune.build_memory(10_000_000, 512, 16, 8 * GB) == "2048MB"  # a quarter of the memory


def test_build_parameters_follow_the_size_unless_configured() -> None:
    auto = Config.from_env({}).hnsw
    assert auto.ef_construction == 0
    assert builds.params(30_000, auto).ef_construction == 64
    assert builds.params(199_999, auto).ef_construction == 64
    assert builds.params(200_000, auto).ef_construction == 112
    assert builds.params(1_000_000, auto).ef_construction == 112
    assert builds.params(1_000, HnswParams(m=48, ef_construction=0)).ef_construction == 96  # pgvector: >= 2m
    fixed = Config.from_env({"INDEX_HNSW_EF_CONSTRUCTION": "40"}).hnsw
    assert builds.params(1_000_000, fixed) == fixed
    # A value pgvector would refuse at build time is refused at start, naming both settings.
    for env in ({"INDEX_HNSW_EF_CONSTRUCTION": "3", "INDEX_HNSW_M": "2"}, {"INDEX_HNSW_EF_CONSTRUCTION": "31"}):
        with pytest.raises(ConfigError, match=r"INDEX_HNSW_EF_CONSTRUCTION=.*INDEX_HNSW_M"):
            Config.from_env(env)
    assert Config.from_env({"INDEX_HNSW_EF_CONSTRUCTION": "8", "INDEX_HNSW_M": "4"}).hnsw.ef_construction == 8


def test_pg_settings_are_read_and_checked() -> None:
    config = Config.from_env({"INDEX_PG_SETTINGS": "work_mem=32MB, shared_buffers=2GB ,jit=off"})
    assert dict(config.pg_settings) == {"work_mem": "32MB", "shared_buffers": "2GB", "jit": "off"}
    for bad in ("work_mem", "work mem=1MB", "log_line_prefix=a b", "x=1;rm"):
        with pytest.raises(ConfigError, match="INDEX_PG_SETTINGS"):
            Config.from_env({"INDEX_PG_SETTINGS": bad})
    merged = pgtune.embedded_settings(True, {"shared_buffers": "300MB"}, memory=4 * GB, cpus=2)
    assert merged["shared_buffers"] == "300MB" and merged["work_mem"] == "16MB"
    assert pgtune.embedded_settings(False, {"work_mem": "8MB"}) == {"work_mem": "8MB"}


def test_the_embedded_server_runs_with_the_tuned_settings() -> None:
    settings = {**pgtune.embedded_settings(True, {"work_mem": "7MB"}, memory=2 * GB, cpus=2), **FAST_SETTINGS}
    with scratch_postgres("tuned-pg-", settings) as pg:
        conn = psycopg2.connect(pg.dsn())
        try:
            with conn.cursor() as cur:
                shown = {}
                for name in ("shared_buffers", "work_mem", "max_wal_size", "checkpoint_timeout",
                             "max_parallel_maintenance_workers"):
                    cur.execute(f"SHOW {name}")
                    shown[name] = cur.fetchone()[0]
        finally:
            conn.close()
    assert shown == {"shared_buffers": "512MB", "work_mem": "7MB", "max_wal_size": "2GB",
                     "checkpoint_timeout": "15min", "max_parallel_maintenance_workers": "1"}
