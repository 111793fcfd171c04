"""BulkLoads' clocks: when a deferred index is due, and when a collection's upserts count as paused."""

from __future__ import annotations

import pytest

from index_service.bulk import BulkLoads


@pytest.fixture
def clock() -> list[float]:
    """A settable clock: clock[0] is now."""
    return [100.0]


def at(clock: list[float]) -> BulkLoads:
    """BulkLoads on that clock (its pool is only for starting(), which these tests leave out)."""
    return BulkLoads(pool=None, min_rows=1000, idle_s=5, clock=lambda: clock[0])  # type: ignore[arg-type]


def test_a_deferred_index_is_due_once_upserts_pause(clock: list[float]) -> None:
    loads = at(clock)
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
    loads = at(clock)
    loads.wait_for("photos")
    clock[0] += 3
    loads.wait_for("photos")
    clock[0] += 2
    assert loads.due() == ["photos"]


def test_quiet_needs_no_upsert_under_way_nor_a_recent_end(clock: list[float]) -> None:
    loads = at(clock)
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
    loads = at(clock)
    loads.wait_for("photos")
    assert not loads.quiet("photos", 1)
    clock[0] += 1
    assert loads.quiet("photos", 1)
