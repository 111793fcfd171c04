"""Counting outcomes, the progress display, the per-file report and the final summary."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a run did; every found file ends up in exactly one of the outcome counts."""

    found: int = 0
    loaded: int = 0
    present: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    elapsed_s: float = 0.0
    dry_run: bool = False
    stopped: str = ""  # why the run stopped early, if it did

    @property
    def done(self) -> int:
        """Files with an outcome so far."""
        return self.loaded + self.present + sum(self.skipped.values()) + self.failed

    @property
    def rate(self) -> float:
        """Files with an outcome per second."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"found": self.found, "loaded": self.loaded, "already_present": self.present,
                "skipped": dict(sorted(self.skipped.items())), "failed": self.failed,
                "elapsed_s": round(self.elapsed_s, 3), "files_per_s": round(self.rate, 2),
                "dry_run": self.dry_run, "stopped": self.stopped}

    def text(self) -> str:
        """The human summary printed at the end of a run."""
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        verb = "would load" if self.dry_run else "loaded"
        lines = [
            f"found            {self.found}",
            f"{verb:<16} {self.loaded}",
            f"already present  {self.present}",
            f"skipped          {skipped}" + (f" ({reasons})" if reasons else ""),
            f"failed           {self.failed}",
            f"elapsed          {self.elapsed_s:.1f} s ({self.rate:.1f} files/s)",
        ]
        if self.stopped:
            lines.append(f"stopped early:   {self.stopped}")
        return "\n".join(lines)


class Report:
    """Thread-safe outcome recorder: counts, the JSON-lines report file, and progress."""

    def __init__(self, path: Path | None, progress: Progress | None = None, dry_run: bool = False) -> None:
        self.summary = Summary(dry_run=dry_run)
        self._lock = threading.Lock()
        self._file: IO[str] | None = path.open("w", encoding="utf-8") if path else None
        self._progress = progress
        self._started = time.monotonic()

    def found(self, total: int) -> None:
        """Set how many files the run will look at."""
        with self._lock:
            self.summary.found = total
        if self._progress:
            self._progress.start(total)

    def loaded(self, n: int = 1) -> None:
        """Count newly stored images."""
        self._add("loaded", n)

    def present(self, n: int = 1) -> None:
        """Count images the index already held."""
        self._add("present", n)

    def skipped(self, rel: str, reason: str) -> None:
        """Count and report a file skipped on purpose."""
        with self._lock:
            self.summary.skipped[reason] += 1
            self._write({"file": rel, "outcome": "skipped", "reason": reason})
        self._tick(1)

    def failed(self, rel: str, reason: str) -> None:
        """Count and report a file that could not be loaded."""
        log.debug("failed: %s: %s", rel, reason)
        with self._lock:
            self.summary.failed += 1
            self._write({"file": rel, "outcome": "failed", "reason": reason})
        self._tick(1)

    def finish(self, stopped: str = "") -> Summary:
        """Close the report (ending it with the summary) and the progress display."""
        with self._lock:
            self.summary.elapsed_s = time.monotonic() - self._started
            self.summary.stopped = stopped
            self._write({"summary": self.summary.as_dict()})
            if self._file:
                self._file.close()
                self._file = None
        if self._progress:
            self._progress.close()
        return self.summary

    def _add(self, name: str, n: int) -> None:
        with self._lock:
            setattr(self.summary, name, getattr(self.summary, name) + n)
        self._tick(n)

    def _write(self, record: dict[str, Any]) -> None:
        if self._file:
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()  # a killed run still leaves every line it got to

    def _tick(self, n: int) -> None:
        if self._progress:
            self._progress.advance(n, self.summary)


class Progress:
    """A tqdm bar on a terminal, else one plain line every `interval_s` seconds."""

    def __init__(self, interval_s: float = 10.0, stream: IO[str] | None = None, bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar_wanted = self.stream.isatty() if bar is None else bar
        self.interval_s = interval_s
        self._bar: Any = None
        self._total = 0
        self._done = 0
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def start(self, total: int) -> None:
        """Begin showing progress towards `total` files."""
        self._total = total
        self._started = self._last = time.monotonic()
        if self.bar_wanted:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="img", file=self.stream, dynamic_ncols=True, smoothing=0.1)

    def advance(self, n: int, summary: Summary) -> None:
        """Note `n` more files done."""
        with self._lock:
            self._done += n
            if self._bar is not None:
                self._bar.update(n)
                return
            now = time.monotonic()
            if now - self._last >= self.interval_s:
                self._last = now
                self.stream.write(self.line(summary, now) + "\n")
                self.stream.flush()

    def line(self, summary: Summary, now: float) -> str:
        """One plain progress line: done/total, rate, ETA and the outcome counts so far."""
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        left = max(self._total - self._done, 0)
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        pct = 100 * self._done / self._total if self._total else 100.0
        return (f"{self._done}/{self._total} files ({pct:.0f}%), {rate:.1f} files/s, ETA {eta}; "
                f"loaded {summary.loaded}, present {summary.present}, "
                f"skipped {sum(summary.skipped.values())}, failed {summary.failed}")

    def close(self) -> None:
        """Stop the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
