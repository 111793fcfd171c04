"""The photo facts of a decode (semsearch_common.exif) as the contract's PhotoFacts."""

from __future__ import annotations

from protos.semsearch.v1 import common_pb2
from semsearch_common.exif import Facts


def to_proto(facts: Facts) -> common_pb2.PhotoFacts:
    """PhotoFacts with the optional fields set only where the file stated a sane value."""
    out = common_pb2.PhotoFacts(camera_make=facts.camera_make, camera_model=facts.camera_model,
                                notes=facts.notes)
    if facts.taken_at is not None:
        out.taken_at = facts.taken_at
    if facts.taken_offset_minutes is not None:
        out.taken_offset_minutes = facts.taken_offset_minutes
    if facts.latitude is not None and facts.longitude is not None:
        out.latitude, out.longitude = facts.latitude, facts.longitude
    return out
