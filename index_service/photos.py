"""Photo facts, tags, search filters and date sorts of the index: types and validation (no grpc, no SQL)."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

from semsearch_common.errors import InvalidArgument

MAX_TAG_CHARS = 100
MAX_TAGS = 64  # per image
MAX_OFFSET_MINUTES = 840  # UTC-14 .. UTC+14


@dataclass(frozen=True)
class Facts:
    """What a file says about itself (common.proto PhotoFacts); None = unknown."""

    taken_at: int | None = None  # seconds since the epoch
    taken_offset_minutes: int | None = None
    camera_make: str = ""
    camera_model: str = ""
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class GeoBox:
    """A box in degrees; west > east crosses the antimeridian."""

    south: float
    west: float
    north: float
    east: float


@dataclass(frozen=True)
class Filter:
    """The photo filters of a search (labels and source stay on SearchQuery); empty matches everything."""

    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    taken_from: int | None = None
    taken_until: int | None = None
    camera: str = ""
    has_location: bool | None = None
    box: GeoBox | None = None

    @property
    def active(self) -> bool:
        """Whether any restriction is set."""
        return self != Filter()


SORTS = ("relevance", "date_desc", "date_asc")


@dataclass(frozen=True)
class Order:
    """How hits are ranked: sort, relative cutoff (None = unset) and how many hits to skip."""

    sort: str = "relevance"
    gap: float | None = None
    fraction: float | None = None
    offset: int = 0

    @property
    def by_date(self) -> bool:
        """Whether hits are sorted by capture time."""
        return self.sort != "relevance"

    @property
    def has_cutoff(self) -> bool:
        """Whether a relevance cutoff applies."""
        return self.gap is not None or self.fraction is not None


def clean_tag(tag: str) -> str:
    """The trimmed tag; raises InvalidArgument naming it when it is empty, too long or holds control characters."""
    value = tag.strip()
    if not value:
        raise InvalidArgument(f"tag {tag!r} is empty")
    if len(value) > MAX_TAG_CHARS:
        raise InvalidArgument(f"tag {value[:20]!r}… is longer than {MAX_TAG_CHARS} characters")
    # Unicode category Cc: C0 and C1 controls (NUL, tab, newline, DEL…); Postgres text cannot hold NUL.
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidArgument(f"tag {value!r} contains a control character")
    return value


def clean_tags(tags: list[str] | tuple[str, ...], limit: int = MAX_TAGS) -> tuple[str, ...]:
    """Trimmed, distinct, sorted tags; raises InvalidArgument for a bad tag or more than `limit`."""
    out = sorted({clean_tag(t) for t in tags})
    if len(out) > limit:
        raise InvalidArgument(f"{len(out)} tags; at most {limit} per image")
    return tuple(out)


def merge_tags(stored: tuple[str, ...] | list[str], add: tuple[str, ...], remove: tuple[str, ...] = ()) -> tuple[
        str, ...]:
    """The stored tags with `add` added and `remove` removed, sorted."""
    return tuple(sorted((set(stored) | set(add)) - set(remove)))


def check_facts(f: Facts) -> None:
    """Raise InvalidArgument for facts out of range (the embedder checks them too; clients may not)."""
    if f.taken_offset_minutes is not None and abs(f.taken_offset_minutes) > MAX_OFFSET_MINUTES:
        raise InvalidArgument(f"taken_offset_minutes {f.taken_offset_minutes} is outside -840..840")
    if f.taken_offset_minutes is not None and f.taken_at is None:
        raise InvalidArgument("taken_offset_minutes is set without taken_at")
    if (f.latitude is None) != (f.longitude is None):
        raise InvalidArgument("latitude and longitude must be set together")
    if f.latitude is not None and not (math.isfinite(f.latitude) and -90 <= f.latitude <= 90):
        raise InvalidArgument(f"latitude {f.latitude} is outside -90..90")
    if f.longitude is not None and not (math.isfinite(f.longitude) and -180 <= f.longitude <= 180):
        raise InvalidArgument(f"longitude {f.longitude} is outside -180..180")
    for name in ("camera_make", "camera_model"):
        value = getattr(f, name)
        if len(value) > 200 or "\x00" in value:
            raise InvalidArgument(f"{name} is longer than 200 characters or contains a NUL")


def check_box(box: GeoBox) -> None:
    """Raise InvalidArgument unless the box's edges are degrees in range, north at least south."""
    if not all(math.isfinite(x) for x in (box.south, box.west, box.north, box.east)):
        raise InvalidArgument("box edges must be finite")
    if not (-90 <= box.south <= box.north <= 90):
        raise InvalidArgument("box needs -90 <= south <= north <= 90")
    if not (-180 <= box.west <= 180 and -180 <= box.east <= 180):
        raise InvalidArgument("box west and east must be within -180..180")


def check_order(order: Order) -> None:
    """Raise InvalidArgument for a cutoff out of range."""
    if order.gap is not None and not (math.isfinite(order.gap) and 0 <= order.gap <= 2):
        raise InvalidArgument("cutoff.gap must be between 0 and 2")
    if order.fraction is not None and not (math.isfinite(order.fraction) and 0 <= order.fraction <= 1):
        raise InvalidArgument("cutoff.fraction must be between 0 and 1")


def label_of(label: str, tags: tuple[str, ...] | list[str]) -> str:
    """What Hit.label and ImageMeta.label say: the stored label while it is a tag, else the first tag, else ""."""
    if label and label in tags:
        return label
    return tags[0] if tags else ""
