"""The recall keeper says so in the log when its estimate falls below the target (issue 14), without a database:
the measurement is replaced by a canned estimate, the row count by a constant."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from index_service import recall
from index_service.catalog import Coll
from index_service.dialects import Dialect, PgVector
from index_service.recall import Breadth, Estimate, RecallKeeper

COLL = Coll(name="photos", table="images_photos", dim=4, model_id="m@1")
ROWS = 20_000


def keeper_measuring(monkeypatch: pytest.MonkeyPatch, value: float, target: float = 0.98) -> RecallKeeper:
    """A keeper whose every measurement finds `value` at the breadth it was asked to use."""

    def measure(tx: Any, dialect: Dialect, c: Coll, ef: int, queries: int, budget_s: float,
                probe: int | None = None) -> Estimate:
        return Estimate(value, queries, ef, ROWS, time.time(), 0.1)

    def tx(work: Callable[[Any], Any], timeout_s: float) -> int:
        return ROWS  # the only work run through it here is the row count

    monkeypatch.setattr(recall, "measure", measure)
    return RecallKeeper(Breadth(floor=40, fixed=False), dialect=PgVector, tx=tx,  # type: ignore[arg-type]
                        collections=lambda: [COLL],
                        target=target, queries=50, interval_s=3600.0, budget_s=10.0)


def test_an_estimate_below_target_is_a_warning_naming_both(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    keeper = keeper_measuring(monkeypatch, 0.912)
    with caplog.at_level(logging.INFO, logger="index_service.recall"):
        estimate = keeper.check(COLL)
    assert estimate is not None and estimate.recall == pytest.approx(0.912)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "collection photos" in warnings[0] and "0.912 is below the target 0.98" in warnings[0]
    assert "widening to ef 60" in warnings[0]  # and it acts on it


def test_an_estimate_at_target_is_no_warning(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    keeper = keeper_measuring(monkeypatch, 0.991)
    with caplog.at_level(logging.INFO, logger="index_service.recall"):
        assert keeper.check(COLL) is not None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "estimated recall@10 0.991" in caplog.text  # still reported, at info


def test_a_miss_at_the_widest_breadth_says_only_a_rebuild_helps(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    keeper = keeper_measuring(monkeypatch, 0.93)
    keeper.breadth.restore(COLL.name, recall.MAX_EF, ROWS, None)  # widened as far as pgvector goes
    with caplog.at_level(logging.INFO, logger="index_service.recall"):
        assert keeper.check(COLL) is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"at ef {recall.MAX_EF}" in warnings[0]
    assert "only a rebuild with a larger INDEX_HNSW_EF_CONSTRUCTION or INDEX_HNSW_M" in warnings[0]
    assert keeper.breadth.ef(COLL.name) == recall.MAX_EF
