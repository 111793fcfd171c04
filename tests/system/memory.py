"""What the hostile-input tests measure: this process's peak memory and the files of a media store."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil


class RssSampler:
    """Samples this process's resident memory every few milliseconds and keeps the peak."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def now(self) -> int:
        """Current RSS in bytes (also folded into the peak)."""
        rss = self.process.memory_info().rss
        self.peak = max(self.peak, rss)
        return rss

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)


def media_files(root: Path) -> list[Path]:
    """Every regular file under a media store."""
    return [p for p in root.rglob("*") if p.is_file()]
