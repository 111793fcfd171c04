"""The SQL of photo facts and tags: their COPY fields, reading them back, tag edits and tag counts."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from psycopg2.extensions import cursor

from index_service import tag_counts as counts
from index_service.domain import ImageMeta, InvalidArgument, NewImage, ServiceError
from index_service.photos import MAX_TAGS, Facts, label_of, merge_tags

# Appended to the columns an upsert COPYs and to those Get and ListImages read, in this order.
COLUMNS = "tags, taken_at, taken_offset_minutes, camera_make, camera_model, latitude, longitude, file_mtime_ns"
TEXT_OID = 25
_INT2, _INT4, _INT8, _FLOAT8 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q"), struct.Struct(">d")


def text_array(values: Sequence[str]) -> bytes:
    """A text[] in COPY's binary format: dimensions, null flag, element type, then length-prefixed elements."""
    if not values:
        return struct.pack(">iii", 0, 0, TEXT_OID)
    out = [struct.pack(">iiiii", 1, 0, TEXT_OID, len(values), 1)]
    for v in values:
        data = v.encode()
        out += (_INT4.pack(len(data)), data)
    return b"".join(out)


def copy_fields(item: NewImage) -> list[bytes | None]:
    """The photo columns of a new row in COPY's binary format (None is SQL NULL)."""
    f = item.facts
    return [
        text_array(item.tags),
        None if f.taken_at is None else _INT8.pack(f.taken_at),
        None if f.taken_offset_minutes is None else _INT2.pack(f.taken_offset_minutes),
        f.camera_make.encode(), f.camera_model.encode(),
        None if f.latitude is None else _FLOAT8.pack(f.latitude),
        None if f.longitude is None else _FLOAT8.pack(f.longitude),
        _INT8.pack(item.file_mtime_ns),
    ]


def meta_from_row(row: Sequence[Any]) -> ImageMeta:
    """An ImageMeta from a row of repository.META_COLUMNS (the base columns, then COLUMNS above)."""
    # Rows adopted from the prototype have no sha256; the contract's strings have no NULL: "" instead.
    b: list[Any] = [v if v is not None else "" for v in row[:12]]
    stored, taken_at, offset, make, model, lat, lon, mtime = row[12:20]
    tags = tuple(stored or ())
    facts = Facts(taken_at=taken_at, taken_offset_minutes=offset, camera_make=make or "",
                  camera_model=model or "", latitude=lat, longitude=lon)
    return ImageMeta(b[0], b[1], label_of(str(b[2]), tags), b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                     tags=tags, facts=facts, file_mtime_ns=int(mtime or 0))


def _write(cur: cursor, table: str, rows: list[dict[str, Any]]) -> None:
    """Set tags, and the facts a row lacks, of many rows in one statement."""
    cur.execute(
        f"UPDATE {table} AS t SET tags = u.tags, "
        "taken_offset_minutes = CASE WHEN t.taken_at IS NULL THEN u.taken_offset_minutes "
        "ELSE t.taken_offset_minutes END, taken_at = coalesce(t.taken_at, u.taken_at), "
        "camera_make = CASE WHEN t.camera_make = '' THEN coalesce(u.camera_make, '') ELSE t.camera_make END, "
        "camera_model = CASE WHEN t.camera_model = '' THEN coalesce(u.camera_model, '') ELSE t.camera_model END, "
        "longitude = CASE WHEN t.latitude IS NULL THEN u.longitude ELSE t.longitude END, "
        "latitude = coalesce(t.latitude, u.latitude), "
        "file_mtime_ns = CASE WHEN t.file_mtime_ns = 0 THEN coalesce(u.file_mtime_ns, 0) ELSE t.file_mtime_ns END "
        "FROM json_to_recordset(%s) AS u(id bigint, tags text[], taken_at bigint, taken_offset_minutes smallint, "
        "camera_make text, camera_model text, latitude double precision, longitude double precision, "
        "file_mtime_ns bigint) WHERE t.id = u.id",
        (json.dumps(rows),),
    )


def _locked_tags(cur: cursor, table: str, where: str, values: list[Any]) -> list[tuple[Any, int, tuple[str, ...]]]:
    # Rows locked in id order by every tag writer: concurrent edits of overlapping rows never deadlock.
    cur.execute(f"SELECT {where}, id, tags FROM {table} WHERE {where} = ANY(%s) ORDER BY id FOR UPDATE", (values,))
    return [(key, int(row_id), tuple(tags or ())) for key, row_id, tags in cur.fetchall()]


def merge_existing(cur: cursor, table: str, items: Sequence[NewImage]) -> dict[str, ServiceError]:
    """Add the items' tags (and the facts a row lacks) to the stored rows of their sha256; returns refusals."""
    if not items:
        return {}
    by_sha = {i.sha256: i for i in items}
    refused: dict[str, ServiceError] = {}
    rows: list[dict[str, Any]] = []
    for sha, row_id, stored in _locked_tags(cur, table, "sha256", list(by_sha)):
        item = by_sha[sha]
        tags = merge_tags(stored, item.tags)
        if len(tags) > MAX_TAGS:
            refused[sha] = InvalidArgument(f"image {row_id} would carry {len(tags)} tags; at most {MAX_TAGS}")
            continue
        f = item.facts
        rows.append({"id": row_id, "tags": list(tags), "taken_at": f.taken_at,
                     "taken_offset_minutes": f.taken_offset_minutes, "camera_make": f.camera_make,
                     "camera_model": f.camera_model, "latitude": f.latitude, "longitude": f.longitude,
                     "file_mtime_ns": item.file_mtime_ns})
    if rows:
        _write(cur, table, rows)
    return refused


def update_tags(cur: cursor, table: str, ids: Sequence[int], add: tuple[str, ...],
                remove: tuple[str, ...]) -> list[int]:
    """Add and remove tags of the ids that exist, all or nothing; returns those ids, sorted."""
    found = _locked_tags(cur, table, "id", sorted(set(ids)))
    tags_of = {row_id: merge_tags(stored, add, remove) for _, row_id, stored in found}
    over = [(row_id, len(tags)) for row_id, tags in tags_of.items() if len(tags) > MAX_TAGS]
    if over:
        raise InvalidArgument(f"image {over[0][0]} would carry {over[0][1]} tags; at most {MAX_TAGS}")
    cur.execute(
        f"UPDATE {table} AS t SET tags = u.tags FROM json_to_recordset(%s) AS u(id bigint, tags text[]) "
        "WHERE t.id = u.id AND t.tags IS DISTINCT FROM u.tags",
        (json.dumps([{"id": i, "tags": list(t)} for i, t in tags_of.items()]),),
    )
    return sorted(tags_of)


def tag_counts(cur: cursor, collection: str) -> list[tuple[str, int]]:
    """Every tag in use with the number of images carrying it, by name (code point order)."""
    return [(tag, n) for tag, n in counts.counts(cur, collection) if tag]


def label_counts(cur: cursor, collection: str) -> list[tuple[str, int]]:
    """ListLabels answered from tags: every tag with its count, and "" for the images without any, first."""
    return counts.counts(cur, collection)
