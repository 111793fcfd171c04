"""Search routes: by words, by example image, and more like a stored image."""

import math
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from gateway import images, schemas, upload
from gateway.clients import Api, Deadline
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.routes import filters
from gateway.routes.common import ERRORS, Backend, Collection, ImageId, check_text, image_urls
from protos.semsearch.v1 import index_pb2

MAX_LABELS = 50


@dataclass(frozen=True)
class SearchParams:
    """Paging, filter and score floor of a search, as the query string gave them."""

    k: int
    offset: int
    labels: list[str]
    min_score: float | None
    collection: str = ""
    narrow: filters.Narrowing = filters.NONE

    @property
    def depth(self) -> int:
        """How many hits to ask the index for: the skipped ones and the page."""
        return self.offset + self.k

    def filter(self) -> index_pb2.Filter:
        """The index's filter message."""
        return self.narrow.filter(index_pb2.Filter(labels=self.labels))


def router(config: GatewayConfig) -> APIRouter:
    """The search routes, with the limits and defaults of config."""
    routes = APIRouter(tags=["search"])
    K = Annotated[int, Query(ge=1, le=config.max_k, description="hits to return")]
    Offset = Annotated[int, Query(ge=0, lt=config.max_depth, description="hits to skip (for 'load more')")]
    Labels = Annotated[list[str], Query(description="only these labels (repeatable)")]
    MinScore = Annotated[float | None, Query(ge=-1.0, le=1.0, description="drop hits below this similarity")]

    def search_params(k: K = config.default_k, offset: Offset = 0, label: Labels = [],  # noqa: B006
                      min_score: MinScore = None, collection: Collection = "",
                      narrow: filters.Narrow = filters.NONE) -> SearchParams:
        return SearchParams(k, offset, [lb for lb in label if lb], min_score, collection, narrow)

    Params = Annotated[SearchParams, Depends(search_params)]

    def check(p: SearchParams) -> None:
        # Called where the old inline checks ran, so a request with two faults reports the same one first.
        if p.depth > config.max_depth:
            raise ApiError(400, f"offset + k must not exceed {config.max_depth}")
        if p.min_score is not None and not math.isfinite(p.min_score):
            raise ApiError(400, "min_score must be a number between -1 and 1")
        if len(p.labels) > MAX_LABELS:
            raise ApiError(400, f"at most {MAX_LABELS} labels")
        for lb in p.labels:
            check_text("label", lb, 200)

    async def run_search(b: Api, vector: list[float] | None, image_id: int | None, model_id: str,
                         p: SearchParams, deadline: Deadline, started: float, embed_ms: float,
                         truncated: bool = False) -> Response:
        check(p)
        depth, filt, floor, k, offset = p.depth, p.filter(), p.min_score, p.k, p.offset
        t0 = time.perf_counter()
        if image_id is None:
            try:
                reply = await b.search(index_pb2.SearchRequest(vector=vector, k=depth, filter=filt, min_score=floor,
                                                               model_id=model_id, collection=p.collection,
                                                               sort=p.narrow.sort, cutoff=p.narrow.cutoff()), deadline)
            except ApiError as err:
                raise await _mismatch(b, err, p.collection, model_id, deadline) from None
        else:
            reply = await b.similar(index_pb2.SearchSimilarRequest(id=image_id, k=depth, filter=filt,
                                                                   min_score=floor, collection=p.collection,
                                                                   sort=p.narrow.sort,
                                                                   cutoff=p.narrow.cutoff()), deadline)
        search_ms = (time.perf_counter() - t0) * 1000
        # Built as plain dicts: the hot path skips pydantic's validation of our own output (the model,
        # schemas.SearchResult, still documents it, and the schema-conformance fuzz test checks it).
        total_ms = (time.perf_counter() - started) * 1000
        return JSONResponse({
            "hits": [_hit(h, p.collection) for h in reply.hits[offset:]], "offset": offset, "k": k,
            "has_more": len(reply.hits) == depth and depth < config.max_depth, "truncated": truncated,
            "timings": {"embed_ms": embed_ms, "search_ms": search_ms, "database_ms": reply.search_ms,
                        "total_ms": total_ms},
        }, headers={"Server-Timing": f"embed;dur={embed_ms:.1f}, search;dur={search_ms:.1f}, total;dur={total_ms:.1f}"})

    @routes.get("/api/search", response_model=schemas.SearchResult, responses=ERRORS)
    async def search_text(b: Backend, q: Annotated[str, Query(description="what to look for")], p: Params
                          ) -> Response:
        """Search by words."""
        started = time.perf_counter()
        text = q.strip()
        if not text:
            raise ApiError(400, "the query is empty")
        check_text("q", text, config.max_query_chars, too_long=413)
        check(p)  # refuse bad parameters before spending an embedding
        deadline = Deadline(config.search_deadline_s)
        vector, model_id, truncated = await b.embed_text(text, deadline)
        embed_ms = (time.perf_counter() - started) * 1000
        return await run_search(b, vector, None, model_id, p, deadline, started, embed_ms, truncated)

    @routes.post("/api/search/image", response_model=schemas.SearchResult, responses=ERRORS)
    async def search_image(b: Backend, file: Annotated[UploadFile, File(description="the example image")],
                           p: Params) -> Response:
        """Search by example: the image is embedded, not stored."""
        started = time.perf_counter()
        check(p)
        data = await file.read(config.max_file_bytes + 1)
        images.check(data, file.filename or "image", config.max_file_bytes, config.max_pixels)
        deadline = Deadline(config.search_deadline_s)
        reply = await b.embed_images([("query", data)], 0, deadline)
        result = reply.results[0]
        if result.HasField("error"):
            raise ApiError(upload.ITEM_HTTP.get(result.error.code, 400), result.error.message)
        embed_ms = (time.perf_counter() - started) * 1000
        return await run_search(b, list(result.embedding), None, reply.model_id, p, deadline, started, embed_ms)

    @routes.get("/api/images/{image_id}/similar", response_model=schemas.SearchResult, responses=ERRORS)
    async def similar(b: Backend, image_id: ImageId, p: Params) -> Response:
        """More like this: neighbours of a stored image, the image itself excluded."""
        started = time.perf_counter()
        return await run_search(b, None, image_id, "", p, Deadline(config.search_deadline_s), started, 0.0)

    return routes


async def _mismatch(b: Api, err: ApiError, collection: str, model_id: str, deadline: Deadline) -> ApiError:
    """A 409 of the index said plainly: which model made the collection and which one the embedder serves."""
    if err.status != 409:
        return err
    wanted = collection or "default"
    try:
        known = await b.collections(deadline)
    except ApiError:
        return err  # the index's own words are still right, only less plain
    for c in known:
        if (wanted == c.name or wanted in c.aliases) and c.model_id != model_id:
            return ApiError(409, f"this collection ({c.name}) was made with model {c.model_id or 'none yet'} "
                                 f"({c.dim} dimensions); the embedder serves {model_id}")
    return err


def _hit(h: index_pb2.Hit, collection: str) -> dict[str, object]:
    return {"id": h.id, "score": round(h.score, 5), "label": h.label, "source": h.source, "width": h.width,
            "height": h.height, **image_urls(h.id, collection), **filters.hit_fields(h)}
