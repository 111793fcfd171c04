"""`python -m loader sync DIR --watch`: a sync pass after every burst of changes, until SIGTERM or SIGINT.

watchdog reports each created, modified, moved or deleted file; events only mark the folder dirty. A
pass starts once no event came for `settle_s` (a copy of many files is one pass, not thousands), and a
pass leaves files written less than `settle_s` ago for the next one, so a file still being written is
never read half-way. Each pass compares the whole folder with the index by size and mtime, which costs a
stat per file: a missed event is caught by the next pass, never lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from loader.sync import SyncSummary

log = logging.getLogger(__name__)

# Opening and reading files (our own passes do) are events too, and must not start another pass.
CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})


class Dirty(FileSystemEventHandler):
    """Remembers that something changed, and when it last did."""

    def __init__(self) -> None:
        self.changed = threading.Event()
        self.last = time.monotonic()

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Mark the folder dirty for a change (not for opens and reads)."""
        if event.event_type in CHANGES:
            self.mark()

    def mark(self) -> None:
        """Ask for a pass after the settle time."""
        self.last = time.monotonic()
        self.changed.set()


def watch(root: Path, run_pass: Callable[[], SyncSummary], settle_s: float, stop: threading.Event,
          report: Callable[[SyncSummary], None]) -> None:
    """Run a pass now, then after each settled burst of changes, until `stop` is set."""
    dirty = Dirty()
    observer = Observer()
    observer.schedule(dirty, str(root), recursive=True)
    observer.start()
    try:
        dirty.changed.set()  # the first pass runs at once
        dirty.last = 0.0
        while not stop.is_set():
            if not dirty.changed.wait(0.2):
                continue
            while not stop.is_set() and (quiet := time.monotonic() - dirty.last) < settle_s:
                stop.wait(settle_s - quiet)
            if stop.is_set():
                break
            dirty.changed.clear()
            summary = run_pass()
            report(summary)
            if summary.waiting:
                dirty.mark()  # files still being written: look again once they have settled
    finally:
        observer.stop()
        observer.join(timeout=10)
    log.info("watch stopped")
