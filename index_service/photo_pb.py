"""Proto <-> domain for photo facts, tags, filters, sorts and cutoffs (the servicer's translation of issue 12)."""

from __future__ import annotations

from typing import Any

from index_service import domain
from index_service.domain import InvalidArgument
from index_service.photos import (
    MAX_TAGS,
    Facts,
    Filter,
    GeoBox,
    Order,
    check_box,
    check_facts,
    check_order,
    clean_tag,
    clean_tags,
)
from protos.semsearch.v1 import common_pb2, index_pb2

SORTS = {index_pb2.SORT_UNSPECIFIED: "relevance", index_pb2.SORT_RELEVANCE: "relevance",
         index_pb2.SORT_DATE_DESC: "date_desc", index_pb2.SORT_DATE_ASC: "date_asc"}
MAX_FILTER_TAGS = 1000


def facts_from_pb(pb: common_pb2.PhotoFacts) -> Facts:
    """Validated facts of an upsert item (out of range: InvalidArgument for that item)."""
    facts = Facts(
        taken_at=pb.taken_at if pb.HasField("taken_at") else None,
        taken_offset_minutes=pb.taken_offset_minutes if pb.HasField("taken_offset_minutes") else None,
        camera_make=pb.camera_make.strip(), camera_model=pb.camera_model.strip(),
        latitude=pb.latitude if pb.HasField("latitude") else None,
        longitude=pb.longitude if pb.HasField("longitude") else None,
    )
    check_facts(facts)
    return facts


def facts_pb(f: Facts) -> common_pb2.PhotoFacts:
    """The stored facts as the contract's message (unknown ones unset)."""
    return common_pb2.PhotoFacts(taken_at=f.taken_at, taken_offset_minutes=f.taken_offset_minutes,
                                 camera_make=f.camera_make, camera_model=f.camera_model,
                                 latitude=f.latitude, longitude=f.longitude)


def item_tags(item: index_pb2.UpsertItem) -> tuple[str, ...]:
    """An upsert item's tags, its label counted as one more."""
    extra = [item.label] if item.label.strip() else []
    return clean_tags([*item.tags, *extra])


def _filter_tags(name: str, values: Any) -> tuple[str, ...]:
    if len(values) > MAX_FILTER_TAGS:
        raise InvalidArgument(f"at most {MAX_FILTER_TAGS} tags in filter.{name}")
    return tuple(clean_tag(t) for t in values)


def filter_from_pb(pb: index_pb2.Filter, max_text: int) -> Filter:
    """The photo part of a search filter, validated."""
    domain.check_text("filter.camera", pb.camera, max_text)
    box = None
    if pb.HasField("box"):
        box = GeoBox(pb.box.south, pb.box.west, pb.box.north, pb.box.east)
        check_box(box)
    return Filter(
        tags_any=_filter_tags("tags_any", pb.tags_any), tags_all=_filter_tags("tags_all", pb.tags_all),
        taken_from=pb.taken_from if pb.HasField("taken_from") else None,
        taken_until=pb.taken_until if pb.HasField("taken_until") else None,
        camera=pb.camera.strip(), has_location=pb.has_location if pb.HasField("has_location") else None, box=box,
    )


def order_from_pb(request: index_pb2.SearchRequest | index_pb2.SearchSimilarRequest, max_k: int) -> Order:
    """Sort, cutoff and offset of a search, validated (offset + k at most max_k)."""
    if request.sort not in SORTS:
        raise InvalidArgument(f"unknown sort {request.sort}")
    if request.offset + request.k > max_k:
        raise InvalidArgument(f"offset + k must not exceed {max_k}")
    cut = request.cutoff
    order = Order(sort=SORTS[request.sort], gap=cut.gap if cut.HasField("gap") else None,
                  fraction=cut.fraction if cut.HasField("fraction") else None, offset=request.offset)
    check_order(order)
    return order


def update_tags_args(request: index_pb2.UpdateTagsRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The cleaned tags to add and remove; a tag in both is refused."""
    add = clean_tags(list(request.add), MAX_TAGS)
    remove = clean_tags(list(request.remove), MAX_FILTER_TAGS)
    both = sorted(set(add) & set(remove))
    if both:
        raise InvalidArgument(f"tag {both[0]!r} is both added and removed")
    return add, remove


def hit_pb(h: domain.Hit) -> index_pb2.Hit:
    """A search hit as the contract's message."""
    return index_pb2.Hit(id=h.id, score=h.score, label=h.label, source=h.source, width=h.width, height=h.height,
                         tags=h.tags, taken_at=h.taken_at, below_cutoff=h.below_cutoff,
                         taken_offset_minutes=h.taken_offset_minutes)


def meta_fields(m: domain.ImageMeta) -> dict[str, Any]:
    """The ImageMeta fields of issue 12 (tags, facts, file_mtime_ns) as keyword arguments."""
    return {"tags": m.tags, "facts": facts_pb(m.facts), "file_mtime_ns": m.file_mtime_ns}
