"""Unit tests without a database: the dialects' SQL, config parsing, validation, the media store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from index_service import domain
from index_service.config import Config, ConfigError, HnswParams
from index_service.dialects import DialectError, Lantern, PgVector, choose_backend
from index_service.domain import InvalidArgument
from index_service.media import MediaStore

P = HnswParams(m=16, ef_construction=64, ef=64)


def test_lantern_index_ddl_follows_lantern_md() -> None:
    sql = Lantern().index_ddl("images", "images_v_hnsw", 512, P, concurrently=False)
    assert sql == ("CREATE INDEX IF NOT EXISTS images_v_hnsw ON images USING lantern_hnsw (v dist_cos_ops) "
                   "WITH (m=16, ef_construction=64, ef=64, dim=512)")
    assert "dims" not in sql and "USING hnsw" not in sql
    assert "CONCURRENTLY" in Lantern().index_ddl("images", "i", 512, P, concurrently=True)


@pytest.mark.parametrize("dim, params", [
    (0, P), (2001, P), (512, HnswParams(1, 64, 64)), (512, HnswParams(129, 64, 64)),
    (512, HnswParams(16, 0, 64)), (512, HnswParams(16, 401, 64)), (512, HnswParams(16, 64, 0)),
    (512, HnswParams(16, 64, 401)),
])
def test_lantern_rejects_out_of_range_options(dim: int, params: HnswParams) -> None:
    with pytest.raises(DialectError):
        Lantern().index_ddl("images", "i", dim, params, concurrently=False)


def test_lantern_column_operator_and_settings() -> None:
    lantern = Lantern()
    assert lantern.column_type(512) == "REAL[]" and lantern.cast() == "::real[]"
    assert lantern.literal(np.array([0.5, -1.0], dtype=np.float32)) == "{0.5,-1}"
    assert lantern.search_settings(10, P.ef, filtered=False) == ["SET LOCAL lantern_hnsw.init_k = 10"]
    assert lantern.search_settings(250, P.ef, filtered=True) == ["SET LOCAL lantern_hnsw.init_k = 250"]
    assert lantern.search_settings(1, P.ef, filtered=False) == ["SET LOCAL lantern_hnsw.init_k = 10"]
    assert lantern.search_settings(5000, P.ef, filtered=False) == ["SET LOCAL lantern_hnsw.init_k = 1000"]
    settings = " ".join(lantern.search_settings(10, P.ef, True))
    assert "ef_search" not in settings and "lantern_hnsw.ef " not in settings and "pgvector_compat" not in settings
    assert lantern.adopt_column("images", 512) == [] and lantern.extension == "lantern"
    assert lantern.session_setup() == ["LOAD 'lantern'"]


def test_pgvector_sql() -> None:
    pgv = PgVector()
    assert pgv.column_type(512) == "vector(512)" and pgv.cast() == "::vector"
    assert pgv.literal(np.array([0.25, 1.0], dtype=np.float32)) == "[0.25,1]"
    assert pgv.index_ddl("images", "i", 512, P, False) == (
        "CREATE INDEX IF NOT EXISTS i ON images USING hnsw (v vector_cosine_ops) WITH (m=16, ef_construction=64) "
            "WHERE NOT unindexed")
    assert pgv.search_settings(10, 100, False) == ["SET LOCAL hnsw.ef_search = 100"]
    assert pgv.search_settings(500, P.ef, True) == [
        "SET LOCAL hnsw.ef_search = 500", "SET LOCAL hnsw.iterative_scan = relaxed_order"]
    assert pgv.adopt_column("images", 512) == [
        "ALTER TABLE images ALTER COLUMN v TYPE vector(512) USING v::vector(512)"]


def test_literal_round_trips_float32() -> None:
    v = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    text = PgVector().literal(v)
    assert np.array_equal(np.array(text.strip("[]").split(","), dtype=np.float32), v)


def test_choose_backend() -> None:
    assert choose_backend("auto", None, {"lantern", "vector"}) == "lantern"
    assert choose_backend("auto", None, {"vector"}) == "pgvector"
    assert choose_backend("auto", "pgvector", {"lantern", "vector"}) == "pgvector"
    with pytest.raises(DialectError, match="not available"):
        choose_backend("lantern", None, {"vector"})
    with pytest.raises(DialectError, match="created with pgvector"):
        choose_backend("lantern", "pgvector", {"lantern", "vector"})


def test_config_defaults_and_errors() -> None:
    cfg = Config.from_env({})
    assert (cfg.host, cfg.port, cfg.dsn, cfg.backend, cfg.dim, cfg.metrics_port) == (
        "127.0.0.1", 50052, None, "auto", 512, 0)
    assert cfg.embedded and cfg.max_message_mb >= 64
    assert Config.from_env({"PGHOST": "db.internal"}).dsn == ""
    assert Config.from_env({"INDEX_DSN": "host=x", "PGHOST": "y"}).dsn == "host=x"
    env = {"INDEX_HNSW_M": "8", "INDEX_DEFER_INDEX": "yes", "INDEX_BACKEND": "Lantern"}
    cfg = Config.from_env(env)
    assert (cfg.hnsw.m, cfg.defer_index, cfg.backend) == (8, True, "lantern")
    for name, value in [("INDEX_PORT", "http"), ("INDEX_HNSW_EF", "0"), ("INDEX_BACKEND", "faiss"),
                        ("INDEX_DEFER_INDEX", "maybe"), ("INDEX_DIM", "4096")]:
        with pytest.raises(ConfigError, match=name):
            Config.from_env({name: value})


def test_vector_validation() -> None:
    v = np.zeros(4, dtype=np.float32)
    v[0] = 1
    assert domain.check_vector(v.tolist(), 4, 1e-3).dtype == np.float32
    with pytest.raises(domain.Mismatch):
        domain.check_vector([1.0, 0.0], 4, 1e-3)
    for bad in ([float("nan"), 0, 0, 0], [0.5, 0, 0, 0], []):
        with pytest.raises(domain.InvalidArgument):
            domain.check_vector(bad, 4, 1e-3)


def test_media_paths_are_content_addressed(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    data = b"image bytes"
    sha = hashlib.sha256(data).hexdigest()
    store.put(sha, data)
    assert store.path_for(sha) == tmp_path / sha[:2] / sha[2:4] / sha
    assert b"".join(store.open(sha)) == data and store.size(sha) == len(data)
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    for bad in ("../../etc/passwd", "A" * 64, sha[:-1], sha + "/x"):
        with pytest.raises(domain.InvalidArgument):
            store.path_for(bad)


def test_media_sweep_asks_before_removing(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    shas = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    for sha in shas:
        store.put(sha, b"x")
    young = shas[2]
    old = time.time() - 100
    for sha in shas[:2]:
        os.utime(store.path_for(sha), (old, old))
    asked: list[str] = []

    def with_orphans(candidates: list[str], remove: object) -> None:
        asked.extend(candidates)
        remove([shas[0]])  # type: ignore[operator]

    assert store.sweep(with_orphans, grace_s=50) == 1
    assert sorted(asked) == sorted(shas[:2]) and young not in asked
    assert not store.exists(shas[0]) and store.exists(shas[1]) and store.exists(young)


class RecordingCursor:
    """Records statements; answers every query with no rows (a fresh catalog)."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def execute(self, sql: str, params: object = None) -> None:
        self.sql.append(sql)

    def fetchone(self) -> None:
        return None


def test_a_lantern_collection_is_a_real_array_table_with_its_own_index() -> None:
    from index_service import catalog

    cur = RecordingCursor()
    coll = catalog.create(cur, Lantern(), "v2", "clip@2", 768)  # type: ignore[arg-type]
    (table,) = [s for s in cur.sql if s.startswith("CREATE TABLE")]
    assert table.startswith("CREATE TABLE images_v2 (id bigint PRIMARY KEY DEFAULT nextval('image_ids'), v REAL[]")
    ddl = Lantern().index_ddl(coll.table, coll.index, coll.dim, P, concurrently=False)
    assert "images_v2_v_hnsw ON images_v2 USING lantern_hnsw (v dist_cos_ops)" in ddl and "dim=768" in ddl
    for bad in ("", "V2", "2v", "a-b", "x" * 41, "a;drop"):
        with pytest.raises(InvalidArgument):
            catalog.check_name("collection", bad)
