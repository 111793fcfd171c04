"""The files' own modification times an upload may send (File.lastModified in a browser), checked."""

from __future__ import annotations

import time

from gateway.errors import ApiError

FIELD = "last_modified"
FUTURE_S = 86_400  # a day of clock skew between a browser and this server is allowed; more is a broken clock


def file_times_ns(values: list[int], files: int, now: float | None = None) -> list[int]:
    """Each file's modification time in ns (0 = unknown) from milliseconds since the epoch, one per file or none."""
    if not values:
        return [0] * files
    if len(values) != files:
        raise ApiError(400, f"{FIELD}: {len(values)} values for {files} files; send one per file, in order, or none")
    latest_ms = int(((time.time() if now is None else now) + FUTURE_S) * 1000)
    for i, ms in enumerate(values):
        if ms < 0:
            raise ApiError(400, f"{FIELD}: value {i + 1} ({ms}) is negative; milliseconds since 1970 are >= 0")
        if ms > latest_ms:
            raise ApiError(400, f"{FIELD}: value {i + 1} ({ms}) is more than a day in the future")
    return [ms * 1_000_000 for ms in values]
