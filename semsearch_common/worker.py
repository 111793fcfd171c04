"""A daemon thread with a stop event: the shape of every background job of a service."""

from __future__ import annotations

import threading


class Worker:
    """Runs `_loop` on a daemon thread; `_loop` checks (or waits on) `_stop`, which `stop()` sets."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to end and wait for it (a step in progress finishes first)."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        raise NotImplementedError
