"""The near-duplicate scan: GET /api/duplicates, one page of the index's FindDuplicates at a time."""

from typing import Annotated

from fastapi import APIRouter, Query

from gateway import schemas
from gateway.clients import Deadline
from gateway.config import GatewayConfig
from gateway.routes.common import ERRORS, Backend, Collection, image_urls
from protos.semsearch.v1 import index_pb2

MAX_DISTANCE = 0.5  # the index's bounds (index_service/duplicates.py), checked here for a clear 400
MAX_LIMIT = 1000
DistanceParam = Annotated[float, Query(ge=0.0, le=MAX_DISTANCE, allow_inf_nan=False, description=(
    "largest cosine distance (1 - similarity) between neighbours of a group; near-copies of one photo "
    "(re-encoded, resized) lie within about 0.05"))]
AfterParam = Annotated[int, Query(ge=0, le=2**63 - 1, description="the `next` of the previous page; 0 to start")]
LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="images to scan in this call")]


def router(config: GatewayConfig) -> APIRouter:
    """The duplicates route, within the search deadline of config."""
    routes = APIRouter(tags=["collection"])

    @routes.get("/api/duplicates", response_model=schemas.DuplicatePage, responses=ERRORS)
    async def duplicates(b: Backend, max_distance: DistanceParam = 0.05, after: AfterParam = 0,
                         limit: LimitParam = 200, collection: Collection = "") -> schemas.DuplicatePage:
        """Groups of near-duplicate images among the next `limit` images (by id) after `after`.

        The index asks its approximate (HNSW) index for each image's nearest neighbours, never comparing
        all pairs. A group is every image joined through neighbours within `max_distance` (transitively,
        across pages too), reported once: by the page holding its smallest id, which comes first. Call
        again with `after=next` until `next` is null; `scanned` of `total` is the progress. Size `limit`
        so that a page answers within the gateway's search deadline (200 takes about a second).
        """
        request = index_pb2.FindDuplicatesRequest(max_distance=max_distance, after_id=after, limit=limit,
                                                  collection=collection)
        page = await b.duplicates(request, Deadline(config.search_deadline_s))
        groups = [schemas.DuplicateGroup(members=[_member(m, collection) for m in g.members], truncated=g.truncated)
                  for g in page.groups]
        return schemas.DuplicatePage(groups=groups, max_distance=max_distance, scanned=page.scanned,
                                     total=page.total, next=None if page.done else page.last_id, done=page.done)

    return routes


def _member(m: index_pb2.DuplicateMember, collection: str) -> schemas.DuplicateMember:
    i = m.image
    urls = image_urls(i.id, collection)
    query = f"?collection={collection}" if collection else ""
    return schemas.DuplicateMember(
        id=i.id, distance=round(m.distance, 6), label=i.label, file_name=i.file_name, width=i.width,
        height=i.height, size_bytes=i.size_bytes, content_type=i.content_type, created_at=i.created_at,
        display_url=f"/images/{i.id}/display{query}", **urls)
