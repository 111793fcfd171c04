"""The filter, sort and cutoff parameters every search route shares, parsed into the index's messages.

Each bad value is a 400 naming its parameter, raised while FastAPI resolves the dependency: before the
route spends an embedding on the query.
"""

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import Depends, Query

from gateway import facts, tagrules
from gateway.errors import ApiError
from gateway.routes.common import check_text
from protos.semsearch.v1 import index_pb2

MAX_CAMERA_CHARS = 200
SORTS = {"relevance": index_pb2.SORT_RELEVANCE, "date_desc": index_pb2.SORT_DATE_DESC,
         "date_asc": index_pb2.SORT_DATE_ASC}
DATE_HELP = ("an ISO 8601 date (2021-07-04) or date-time (2021-07-04T15:30, 2021-07-04T15:30+02:00); a time "
             "without a zone is read as UTC, as the index stores capture times whose file states no offset")


@dataclass(frozen=True)
class Narrowing:
    """What a search is narrowed to, and how its hits are ordered."""

    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    taken_from: int | None = None
    taken_until: int | None = None
    camera: str = ""
    has_location: bool | None = None
    box: tuple[float, float, float, float] | None = None
    sort: index_pb2.Sort = index_pb2.SORT_RELEVANCE
    cutoff_gap: float | None = None
    cutoff_fraction: float | None = None

    def filter(self, base: index_pb2.Filter) -> index_pb2.Filter:
        """`base` (labels, source) with these restrictions added."""
        base.tags_any.extend(self.tags_any)
        base.tags_all.extend(self.tags_all)
        if self.taken_from is not None:
            base.taken_from = self.taken_from
        if self.taken_until is not None:
            base.taken_until = self.taken_until
        base.camera = self.camera
        if self.has_location is not None:
            base.has_location = self.has_location
        if self.box is not None:
            south, west, north, east = self.box
            base.box.CopyFrom(index_pb2.GeoBox(south=south, west=west, north=north, east=east))
        return base

    def cutoff(self) -> index_pb2.Cutoff | None:
        """The relevance cutoff asked for; None leaves it to the index (its default with a date sort)."""
        if self.cutoff_gap is None and self.cutoff_fraction is None:
            return None
        return index_pb2.Cutoff(gap=self.cutoff_gap, fraction=self.cutoff_fraction)


NONE = Narrowing()


def parse_time(name: str, text: str, end_of_day: bool) -> int:
    """Seconds since the epoch of an ISO date or date-time; a bare date ends at its midnight when end_of_day."""
    value = text.strip()
    try:
        if len(value) == 10:  # YYYY-MM-DD: a whole day, in UTC
            day = date.fromisoformat(value) + timedelta(days=1 if end_of_day else 0)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        when = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise ApiError(400, f"{name}: {value[:40]!r} is not an ISO 8601 date or date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return math.floor(when.timestamp())


def parse_box(text: str) -> tuple[float, float, float, float]:
    """south,west,north,east in degrees, checked."""
    parts = text.split(",")
    try:
        south, west, north, east = (float(p) for p in parts)
    except ValueError:
        raise ApiError(400, "box: give four numbers, south,west,north,east (degrees)") from None
    if not all(math.isfinite(v) for v in (south, west, north, east)):
        raise ApiError(400, "box: the numbers must be finite")
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise ApiError(400, "box: south and north must be latitudes between -90 and 90")
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise ApiError(400, "box: west and east must be longitudes between -180 and 180")
    if south > north:
        raise ApiError(400, "box: south must not be north of north")
    return south, west, north, east


def _share(name: str, value: float | None, high: float) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 <= value <= high):
        raise ApiError(400, f"{name} must be a number between 0 and {high:g}")
    return value


def narrowing(
    tag: Annotated[list[str], Query(description="only images with these tags (repeatable); see `tags`")] = [],  # noqa: B006
    tags: Annotated[Literal["any", "all"], Query(
        description="`any`: images with at least one of the `tag` values; `all`: with every one")] = "any",
    taken_from: Annotated[str | None, Query(description=f"only images taken at or after this: {DATE_HELP}")] = None,
    taken_until: Annotated[str | None, Query(
        description="only images taken before this; a bare date includes that whole day (UTC)")] = None,
    camera: Annotated[str, Query(description="only this camera: its make or its model, any case")] = "",
    has_location: Annotated[bool | None, Query(
        description="true: only images with a GPS position; false: only those without")] = None,
    box: Annotated[str | None, Query(
        description="only images inside south,west,north,east (degrees; west > east crosses the antimeridian)",
        examples=["45.8,5.9,47.8,10.5"])] = None,
    sort: Annotated[Literal["relevance", "date_desc", "date_asc"], Query(
        description="relevance (best first), or the relevant hits by capture time, newest or oldest first "
                    "(undated images last)")] = "relevance",
    cutoff_gap: Annotated[float | None, Query(ge=0, le=2, description=(
        "relevant = score at least the best hit's minus this (0..2). With a date sort and no cutoff the index "
        "uses its default; with relevance, hits below it come back marked `below_cutoff`"))] = None,
    cutoff_fraction: Annotated[float | None, Query(ge=0, le=1, description=(
        "relevant = score at least this share of the best hit's (0..1); both set: both must hold"))] = None,
) -> Narrowing:
    """The narrowing of one search, from its query string."""
    chosen = tagrules.clean("tag", tag, allow_empty=True)
    start = parse_time("taken_from", taken_from, False) if taken_from else None
    end = parse_time("taken_until", taken_until, True) if taken_until else None
    if start is not None and end is not None and start >= end:
        raise ApiError(400, f"taken_from ({facts.iso_utc(start)}) must be before taken_until ({facts.iso_utc(end)})")
    camera = camera.strip()
    check_text("camera", camera, MAX_CAMERA_CHARS)
    return Narrowing(
        tags_any=tuple(chosen) if tags == "any" else (), tags_all=tuple(chosen) if tags == "all" else (),
        taken_from=start, taken_until=end, camera=camera, has_location=has_location,
        box=parse_box(box) if box else None, sort=SORTS[sort],
        cutoff_gap=_share("cutoff_gap", cutoff_gap, 2.0),
        cutoff_fraction=_share("cutoff_fraction", cutoff_fraction, 1.0))


Narrow = Annotated[Narrowing, Depends(narrowing)]


def hit_fields(h: index_pb2.Hit) -> dict[str, object]:
    """What a hit says beyond its score and label: tags, capture time (ISO, UTC, and its offset) and the cutoff mark."""
    taken = facts.iso_utc(h.taken_at) if h.HasField("taken_at") else None
    offset = h.taken_offset_minutes if taken is not None and h.HasField("taken_offset_minutes") else None
    return {"tags": list(h.tags), "taken_at": taken, "below_cutoff": h.below_cutoff, "taken_offset_minutes": offset}
