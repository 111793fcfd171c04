"""Times and photo facts of the contract as the HTTP API writes them (ISO 8601 text, plain numbers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from gateway import schemas
from protos.semsearch.v1 import common_pb2


def iso_utc(seconds: float) -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC ("2021-07-04T13:30:00Z"); None when out of datetime's range."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return None


def taken_iso(facts: common_pb2.PhotoFacts) -> str | None:
    """The capture time as the camera's clock showed it, with its offset when the file states one.

    Without an offset the index holds the camera's wall-clock time read as UTC; writing it without a zone
    ("2021-07-04T15:30:00") says exactly that much and no more.
    """
    if not facts.HasField("taken_at"):
        return None
    try:
        when = datetime.fromtimestamp(facts.taken_at, UTC)
        if facts.HasField("taken_offset_minutes"):
            return when.astimezone(timezone(timedelta(minutes=facts.taken_offset_minutes))).isoformat()
        return when.replace(tzinfo=None).isoformat()
    except (OverflowError, ValueError, OSError):  # the index bounds these; a bad value is no reason for a 500
        return None


def of_meta(facts: common_pb2.PhotoFacts) -> schemas.Facts:
    """The JSON facts of an image."""
    located = facts.HasField("latitude") and facts.HasField("longitude")
    return schemas.Facts(
        taken_at=taken_iso(facts),
        taken_offset_minutes=facts.taken_offset_minutes if facts.HasField("taken_offset_minutes") else None,
        camera_make=facts.camera_make, camera_model=facts.camera_model,
        latitude=facts.latitude if located else None, longitude=facts.longitude if located else None,
        notes=list(facts.notes))


def mtime_iso(file_mtime_ns: int) -> str | None:
    """The file's modification time as ISO 8601 UTC; None when unknown (0)."""
    return iso_utc(file_mtime_ns / 1e9) if file_mtime_ns else None
