"""BulkLoads' clocks: when a deferred index is due, and when a collection's upserts count as paused."""

from __future__ import annotations

import pytest

from index_service import bulk
from index_service.bulk import BulkLoads


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A settable monotonic clock for bulk.py: clock[0] is now."""
    now = [100.0]
    monkeypatch.setattr(bulk.time, "monotonic", lambda: now[0])
    return now


def test_a_deferred_index_is_due_once_upserts_pause(clock: list[float]) -> None:
    loads = BulkLoads(pool=None, min_rows=1000, idle_s=5)  # type: ignore[arg-type]  # the pool is for starting()
    loads.wait_for("photos")
    assert loads.waiting() == ["photos"] and loads.due() == []
    clock[0] += 4
    with loads.upserting() as mark:
        mark("photos")
        clock[0] += 10
        assert loads.due() == [], "an upsert under way holds the build back"
    clock[0] += 4
    assert loads.due() == [], "the pause counts from the end of the last upsert"
    clock[0] += 1
    assert loads.due() == ["photos"]
    loads.built("photos")
    assert loads.due() == [] and loads.waiting() == []


def test_wait_for_keeps_the_clock_of_an_index_already_deferred(clock: list[float]) -> None:
    loads = BulkLoads(pool=None, min_rows=1000, idle_s=5)  # type: ignore[arg-type]
    loads.wait_for("photos")
    clock[0] += 3
    loads.wait_for("photos")
    clock[0] += 2
    assert loads.due() == ["photos"]


def test_quiet_needs_no_upsert_under_way_nor_a_recent_end(clock: list[float]) -> None:
    loads = BulkLoads(pool=None, min_rows=1000, idle_s=5)  # type: ignore[arg-type]
    assert loads.quiet("photos", 1), "never upserted here"
    with loads.upserting() as mark:
        mark("photos")
        mark("photos")  # one call marks a collection once
        assert not loads.quiet("photos", 0)
    assert not loads.quiet("photos", 1) and loads.quiet("photos", 0)
    clock[0] += 1
    assert loads.quiet("photos", 1) and loads.quiet("other", 1)
    assert loads.due() == [], "quiet collections are not deferred ones"


def test_deferring_an_index_starts_the_quiet_clock(clock: list[float]) -> None:
    loads = BulkLoads(pool=None, min_rows=1000, idle_s=5)  # type: ignore[arg-type]
    loads.wait_for("photos")
    assert not loads.quiet("photos", 1)
    clock[0] += 1
    assert loads.quiet("photos", 1)
