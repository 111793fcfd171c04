"""Logging set-up for every service's __main__: text lines for people, JSON lines for collectors."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import TextIO

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, and the trace if any."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Stderr(logging.StreamHandler[TextIO]):
    """The handler setup() installs, told apart so a second call replaces it and nothing else."""


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Send every logger's records at `level` and above to stderr in `fmt` ("text" or "json")."""
    handler = _Stderr(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    # Handlers someone else installed stay (pytest's caplog, when a test runs a service's main() in process).
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Stderr)] + [handler]
    root.setLevel(level.upper())


class Throttled:
    """Lets one record per cause through each `interval_s`, then says how many were held back.

    An outage makes every request fail the same way; one line per cause per interval keeps the log readable.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger, self.interval_s = logger, interval_s
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}

    def log(self, level: int, cause: str, msg: str, *args: object) -> None:
        """Log `msg` unless `cause` was logged within the interval; count it then."""
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(cause, (float("-inf"), 0))
            if now - last < self.interval_s:
                self._seen[cause] = (last, held + 1)
                return
            self._seen[cause] = (now, 0)
        if held:
            msg += f" ({held} more like it in the last {self.interval_s:.0f} s)"
        self.logger.log(level, msg, *args)
