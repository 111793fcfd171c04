"""The breadth policy without a database: first guesses by size, widening on a miss, fixed overrides."""

from __future__ import annotations

from index_service.config import Config
from index_service.dialects import Lantern, PgVector
from index_service.recall import MAX_EF, Breadth, Estimate, initial_ef, narrowed, widened


def _estimate(recall: float, ef: int, narrower: Estimate | None = None) -> Estimate:
    return Estimate(recall=recall, queries=50, ef=ef, rows=300_000, at=0.0, seconds=1.0, stderr=0.005,
                    narrower=narrower)


def test_first_guess_grows_with_the_collection_and_stops_at_the_limit() -> None:
    assert initial_ef(0, 100) == initial_ef(50_000, 100) == 100
    assert 100 < initial_ef(100_000, 100) < initial_ef(300_000, 100) < initial_ef(1_000_000, 100)
    assert initial_ef(300_000, 100) >= 350  # where ef 400 was measured to give 0.981
    assert initial_ef(10**9, 100) == MAX_EF and widened(900) == MAX_EF and widened(100) == 150


def test_a_miss_widens_a_hit_keeps_and_a_smaller_first_guess_never_narrows() -> None:
    b = Breadth(100, fixed=False)
    assert b.ef("c1") == 100 and b.estimate("c1") is None
    assert b.record("c1", _estimate(0.93, 100), 0.98) == 150
    assert b.record("c1", _estimate(0.99, 150), 0.98) == 150
    assert b.grow_to("c1", 1000) == 150  # a smaller first guess never narrows it
    assert b.record("c1", _estimate(0.95, 100), 0.98) == 150  # a stale estimate at a narrower breadth: no change
    assert b.estimate("c1") == _estimate(0.95, 100) and b.ef("other") == 100


def test_a_narrower_breadth_is_taken_only_with_a_margin_and_where_it_is_per_query() -> None:
    b = Breadth(100, fixed=False)
    assert b.grow_to("c1", 1_000_000) == initial_ef(1_000_000, 100) > 600
    ef = b.ef("c1")
    assert narrowed(ef, 100) < ef and narrowed(120, 100) == 100
    close = _estimate(0.983, narrowed(ef, 100))  # within a standard error of the target: not proof enough
    assert b.record("c1", _estimate(0.995, ef, close), 0.98, narrow=True) == ef
    clear = _estimate(0.99, narrowed(ef, 100))
    assert b.record("c1", _estimate(0.995, ef, clear), 0.98, narrow=False) == ef  # Lantern: a rebuild per step
    assert b.record("c1", _estimate(0.995, ef, clear), 0.98, narrow=True) == narrowed(ef, 100)
    # A miss at the narrower breadth widens again, and no later proof takes it back there (or narrower):
    # two samples on either side of the target must not make the breadth swing.
    missed = narrowed(ef, 100)
    assert b.record("c1", _estimate(0.97, missed), 0.98, narrow=True) == widened(missed)
    now = b.ef("c1")
    assert b.record("c1", _estimate(0.995, now, _estimate(0.999, missed)), 0.98, narrow=True) == now
    assert b.record("c1", _estimate(0.995, now, _estimate(0.999, missed - 50)), 0.98, narrow=True) == now
    # An estimate made at another breadth than the one in use never narrows it.
    assert b.record("c1", _estimate(0.995, ef, _estimate(0.999, missed + 50)), 0.98, narrow=True) == now
    # Forgotten (the collection was dropped): a new one of that name starts afresh.
    b.forget("c1")
    assert b.state("c1") == (100, None, None, 0)


def test_growth_scales_the_measured_breadth_not_the_first_guess() -> None:
    b = Breadth(100, fixed=False)
    first = b.grow_to("c1", 100_000)
    assert first == initial_ef(100_000, 100) > 150
    assert b.record("c1", _estimate(0.995, first, _estimate(0.999, narrowed(first, 100))), 0.98,
                    narrow=True) == narrowed(first, 100)
    assert b.grow_to("c1", 105_000) == narrowed(first, 100)  # grown by less than a tenth
    assert narrowed(first, 100) < b.grow_to("c1", 200_000) < initial_ef(200_000, 100)


def test_a_fixed_breadth_only_records() -> None:
    b = Breadth(64, fixed=True)
    assert b.record("c1", _estimate(0.5, 64), 0.98) == 64 and b.grow_to("c1", 10**7) == 64
    assert b.estimate("c1") is not None


def test_a_kept_state_is_taken_up_within_the_floor_and_never_by_a_fixed_breadth() -> None:
    b = Breadth(100, fixed=False)
    b.restore("c1", 240, 300_000, _estimate(0.99, 240), 160)
    assert b.state("c1") == (240, 300_000, _estimate(0.99, 240), 160)
    assert b.grow_to("c1", 320_000) == 240  # grown by less than a tenth since: no new guess
    # The kept miss still counts: a restarted keeper does not narrow back to 160 on a lucky sample.
    assert b.record("c1", _estimate(0.995, 240, _estimate(0.999, 160)), 0.98, narrow=True) == 240
    assert b.record("c1", _estimate(0.995, 240, _estimate(0.999, 200)), 0.98, narrow=True) == 200
    b.restore("c2", 60, None, None)  # kept under a lower INDEX_HNSW_EF: the floor now is 100
    assert b.state("c2") == (100, None, None, 0)
    fixed = Breadth(100, fixed=True)
    fixed.restore("c1", 240, 300_000, _estimate(0.99, 240), 160)
    assert fixed.state("c1") == (100, None, None, 0)


def test_settings() -> None:
    assert Config.from_env({}).target_recall == 0.98
    assert Config.from_env({"INDEX_HNSW_EF": "40"}).target_recall == 0.0  # an explicit breadth is fixed
    assert Config.from_env({"INDEX_HNSW_EF": "40", "INDEX_TARGET_RECALL": "0.95"}).target_recall == 0.95
    assert Config.from_env({"INDEX_TARGET_RECALL": "0"}).target_recall == 0.0


def test_widening_sql_per_backend() -> None:
    assert PgVector().widen("images_v_hnsw", 400) == []
    assert Lantern().widen("images_v_hnsw", 600) == [
        "ALTER INDEX images_v_hnsw SET (ef = 400)", "REINDEX INDEX CONCURRENTLY images_v_hnsw"]


def test_half_size_vectors_per_backend() -> None:
    from index_service.config import HnswParams
    p = HnswParams(16, 64, 64)
    assert PgVector().column_type(512, half=True) == "halfvec(512)" and PgVector().cast(half=True) == "::halfvec"
    assert PgVector().index_ddl("t", "i", 512, p, False, half=True) == (
        "CREATE INDEX IF NOT EXISTS i ON t USING hnsw (v halfvec_cosine_ops) WITH (m=16, ef_construction=64) "
        "WHERE NOT unindexed")
    assert Lantern().column_type(512, half=True) == "REAL[]" and Lantern().cast(half=True) == "::real[]"
    assert Lantern().index_ddl("t", "i", 512, p, False, half=True) == (
        "CREATE INDEX IF NOT EXISTS i ON t USING lantern_hnsw (v dist_cos_ops) "
        "WITH (m=16, ef_construction=64, ef=64, dim=512, quant_bits=16)")
