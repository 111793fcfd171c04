"""The --watch loop and its settle rule without services: bursts coalesce, files being written wait."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from loader.config import LoaderConfig
from loader.sync import SyncPass, SyncSummary
from loader.watch import watch


def test_a_burst_of_changes_is_one_pass_after_it_settles(tmp_path: Path) -> None:
    passes: list[float] = []
    stop = threading.Event()
    first = threading.Event()

    def run_pass() -> SyncSummary:
        passes.append(time.monotonic())
        first.set()
        return SyncSummary()

    thread = threading.Thread(target=watch, args=(tmp_path, run_pass, 0.6, stop, lambda s: None))
    thread.start()
    try:
        assert first.wait(10), "no first pass"
        for i in range(12):
            (tmp_path / f"{i}.jpg").write_bytes(b"x" * 10)
            time.sleep(0.05)
        last_write = time.monotonic()
        deadline = time.monotonic() + 15
        while len(passes) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # room for any extra pass a missing debounce would run
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert 2 <= len(passes) <= 3, passes  # the first pass, then the burst (12 files) in one, rarely two
    assert passes[-1] >= last_write + 0.5  # only once the folder was quiet for the settle time


def test_files_written_within_the_settle_time_wait_for_the_next_pass(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.jpg", tmp_path / "fresh.jpg"
    old.write_bytes(b"x")
    os.utime(old, ns=(time.time_ns() - 10**10, time.time_ns() - 10**10))
    fresh.write_bytes(b"half a pic")
    summary = SyncSummary()
    seen, keep, bad = SyncPass(LoaderConfig(), tmp_path, min_age_s=5)._scan(summary)
    assert [s.candidate.rel for s in seen] == ["old.jpg"]
    assert keep == {"fresh.jpg"} and summary.waiting == 1 and not bad
