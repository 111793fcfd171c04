"""The dynamic batcher: coalescing, bounds, back-pressure, cancellation, failures."""

from __future__ import annotations

import threading
import time

import pytest

from embedder_service.batching import Batcher, Closed, Overloaded


def make(run, **kw) -> Batcher:
    opts = dict(max_batch=8, max_wait_s=0.0, queue_limit=64, name="t")
    opts.update(kw)
    return Batcher(run, **opts)


def holding(gate: threading.Event, entered: threading.Event, wait_s: float = 5):
    """A batch function that says when the worker entered it, then waits for the gate."""

    def run(items: list) -> list:
        entered.set()
        gate.wait(wait_s)
        return items

    return run


def test_concurrent_items_are_coalesced_and_results_keep_their_order() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    entered = threading.Event()

    def run(items: list[int]) -> list[int]:
        entered.set()
        gate.wait(5)
        sizes.append(len(items))
        return [x * 10 for x in items]

    b = make(run)
    first = b.submit([0])  # occupies the worker until the gate opens
    assert entered.wait(5)
    rest = b.submit(list(range(1, 13)))
    gate.set()
    assert [f.result(5) for f in first + rest] == [x * 10 for x in range(13)]
    assert sizes == [1, 8, 4]
    b.close()


def test_partial_batch_runs_after_max_wait() -> None:
    b = make(lambda items: items, max_wait_s=0.02)
    started = time.monotonic()
    assert b.submit(["x"])[0].result(2) == "x"
    assert time.monotonic() - started < 1
    b.close()


def test_one_item_at_a_time_runs_at_once_and_concurrent_items_wait_for_company() -> None:
    sizes: list[int] = []

    def run(items: list[str]) -> list[str]:
        sizes.append(len(items))
        return items

    b = make(run, max_wait_s=0.5)
    started = time.monotonic()
    assert b.submit(["alone"])[0].result(2) == "alone"  # nothing ran before: no wait for company
    assert time.monotonic() - started < 0.4
    assert [f.result(2) for f in b.submit(["a", "b"])] == ["a", "b"]  # one call: one batch, at once
    first = b.submit(["c"])  # after a batch of two: waits for the next caller
    time.sleep(0.1)
    second = b.submit(["d"])
    assert [first[0].result(2), second[0].result(2)] == ["c", "d"]
    assert sizes == [1, 2, 2]
    b.close()


def test_full_queue_raises_overloaded_without_waiting() -> None:
    gate, entered = threading.Event(), threading.Event()
    b = make(holding(gate, entered), queue_limit=4, max_batch=1)
    b.submit([1])
    assert entered.wait(5)  # the worker holds item 1; the queue is empty again
    b.submit([2, 3, 4, 5])
    with pytest.raises(Overloaded):
        b.submit([6])
    with pytest.raises(Overloaded):
        b.submit(list(range(5)))  # larger than the whole queue
    gate.set()
    b.close()


def test_blocking_submit_waits_for_room() -> None:
    gate, entered = threading.Event(), threading.Event()
    b = make(holding(gate, entered), queue_limit=2, max_batch=2)
    b.submit([1])
    assert entered.wait(5)
    b.submit([2, 3])
    threading.Timer(0.2, gate.set).start()
    started = time.monotonic()
    fut = b.submit([4], timeout=5)[0]
    assert time.monotonic() - started >= 0.15
    assert fut.result(5) == 4
    b.close()


def test_cancelled_items_are_not_run() -> None:
    seen: list[int] = []
    gate = threading.Event()

    entered = threading.Event()

    def run(items: list[int]) -> list[int]:
        entered.set()
        gate.wait(5)
        seen.extend(items)
        return items

    b = make(run, max_batch=4)
    b.submit([0])
    assert entered.wait(5)
    futures = b.submit([1, 2, 3])
    futures[1].cancel()
    gate.set()
    assert futures[0].result(5) == 1 and futures[2].result(5) == 3
    assert 2 not in seen
    b.close()


def test_a_failing_batch_fails_each_waiter_and_the_batcher_lives_on() -> None:
    calls = {"n": 0}

    def run(items: list[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return items

    b = make(run, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="boom"):
        b.submit([1])[0].result(5)
    assert b.submit([2])[0].result(5) == 2
    b.close()


def test_close_fails_queued_work_and_refuses_new() -> None:
    gate, entered = threading.Event(), threading.Event()
    b = make(holding(gate, entered, wait_s=0.3), max_batch=1)
    b.submit([1])
    assert entered.wait(5)
    queued = b.submit([2])[0]
    b.close()
    with pytest.raises(Closed):
        queued.result(5)
    with pytest.raises(Closed):
        b.submit([3])
