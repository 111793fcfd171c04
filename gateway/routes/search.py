"""Search routes: by words, by example image, and more like a stored image."""

import copy
import math
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from gateway import images, query, schemas
from gateway.clients import Api, Deadline
from gateway.config import GatewayConfig
from gateway.cursor import CursorError, PageRequest, Signer
from gateway.errors import ApiError
from gateway.querying import parts_of, query_vector
from gateway.routes.common import ERRORS, Backend, Collection, ImageId, Responses, check_text, image_urls
from protos.semsearch.v1 import index_pb2

MAX_LABELS = 50
MAX_CURSOR_CHARS = 16_000  # the guard refuses longer URLs anyway (414); a 2000-d float32 vector needs 11,000
# The search routes' 400 names the place in the query that went wrong (`position`).
SEARCH_ERRORS: Responses = {**ERRORS, 400: {"model": schemas.QueryErrorBody}}
PAGING_HELP = ("Every page carries `next`, a cursor for the page after it (null at the end): "
               "GET /api/search/next?cursor=… returns that page without embedding anything again.")


@dataclass(frozen=True)
class SearchParams:
    """Paging, filter and score floor of a search, as the query string gave them."""

    k: int
    offset: int
    labels: list[str]
    min_score: float | None
    collection: str = ""

    @property
    def depth(self) -> int:
        """How many hits to ask the index for: the skipped ones and the page."""
        return self.offset + self.k

    def filter(self) -> index_pb2.Filter:
        """The index's filter message."""
        return index_pb2.Filter(labels=self.labels)


def router(config: GatewayConfig) -> APIRouter:
    """The search routes, with the limits and defaults of config."""
    routes = APIRouter(tags=["search"])
    K = Annotated[int, Query(ge=1, le=config.max_k, description="hits to return")]
    Offset = Annotated[int, Query(ge=0, lt=config.max_depth, description="hits to skip (for 'load more')")]
    Labels = Annotated[list[str], Query(description="only these labels (repeatable)")]
    MinScore = Annotated[float | None, Query(ge=-1.0, le=1.0, description="drop hits below this similarity")]

    def search_params(k: K = config.default_k, offset: Offset = 0, label: Labels = [],  # noqa: B006
                      min_score: MinScore = None, collection: Collection = "") -> SearchParams:
        return SearchParams(k, offset, [lb for lb in label if lb], min_score, collection)

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

    signer = Signer(config.cursor_key)

    async def run_search(b: Api, vector: list[float] | None, image_id: int | None, model_id: str,
                         p: SearchParams, deadline: Deadline, started: float, embed_ms: float,
                         truncated: bool = False) -> Response:
        check(p)
        depth, filt, floor = p.depth, p.filter(), p.min_score
        # The offset parameter asks for offset + k hits and skips the first ones here, as it always did (any
        # index answers it alike); the cursor of the reply asks the index for the next page alone instead.
        request: PageRequest
        if image_id is None:
            request = index_pb2.SearchRequest(vector=vector, k=depth, filter=filt, min_score=floor,
                                              model_id=model_id, collection=p.collection)
        else:
            request = index_pb2.SearchSimilarRequest(id=image_id, k=depth, filter=filt, min_score=floor,
                                                     collection=p.collection)
        return await page(b, request, p.offset, p.k, deadline, started, embed_ms, truncated)

    async def page(b: Api, request: PageRequest, skip: int, k: int, deadline: Deadline, started: float,
                   embed_ms: float, truncated: bool) -> Response:
        """One page: the index asked for request.k hits from request.offset, the first `skip` dropped here."""
        t0 = time.perf_counter()
        if isinstance(request, index_pb2.SearchRequest):
            try:
                reply = await b.search(request, deadline)
            except ApiError as err:
                raise await _mismatch(b, err, request.collection, request.model_id, deadline) from None
        else:
            reply = await b.similar(request, deadline)
        search_ms = (time.perf_counter() - t0) * 1000
        start = request.offset + skip
        has_more = len(reply.hits) == request.k and start + k < config.max_depth
        following = None
        if has_more:
            after = copy.deepcopy(request)
            after.offset, after.k = start + k, min(k, config.max_depth - start - k)
            following = signer.encode(after, truncated)
        # Built as plain dicts: the hot path skips pydantic's validation of our own output (the model,
        # schemas.SearchResult, still documents it, and the schema-conformance fuzz test checks it).
        total_ms = (time.perf_counter() - started) * 1000
        return JSONResponse({
            "hits": [_hit(h, request.collection) for h in reply.hits[skip:]], "offset": start, "k": k,
            "has_more": has_more, "next": following, "truncated": truncated,
            "timings": {"embed_ms": embed_ms, "search_ms": search_ms, "database_ms": reply.search_ms,
                        "total_ms": total_ms},
        }, headers={"Server-Timing": f"embed;dur={embed_ms:.1f}, search;dur={search_ms:.1f}, total;dur={total_ms:.1f}"})

    @routes.get("/api/search", response_model=schemas.SearchResult, responses=SEARCH_ERRORS,
                summary="Search by words", description=f"Search by words. {query.HELP} {PAGING_HELP}")
    async def search_text(b: Backend, q: Annotated[str, Query(description="what to look for, in the query "
                                                                          "language described above")],
                          p: Params) -> Response:
        """Search by words."""
        started = time.perf_counter()
        text = q.strip()
        if not text:
            raise ApiError(400, "the query is empty")
        check_text("q", text, config.max_query_chars, too_long=413)
        parts = parts_of(q)
        check(p)  # refuse bad parameters before spending an embedding
        deadline = Deadline(config.search_deadline_s)
        made = await query_vector(b, parts, None, 1.0, deadline)
        embed_ms = (time.perf_counter() - started) * 1000
        return await run_search(b, made.vector, None, made.model_id, p, deadline, started, embed_ms, made.truncated)

    @routes.post("/api/search/image", response_model=schemas.SearchResult, responses=SEARCH_ERRORS,
                 summary="Search by example",
                 description="Search by example: the image is embedded, not stored. With `q`, the image is one more "
                             f"part of the query, added with `weight`. {query.HELP} {PAGING_HELP}")
    async def search_image(b: Backend, file: Annotated[UploadFile, File(description="the example image")],
                           p: Params,
                           q: Annotated[str, Query(description="words to combine with the image (optional)")] = "",
                           weight: Annotated[float, Query(description=f"the image's weight among the parts, "
                                                          f"{query.MIN_WEIGHT:g} to {query.MAX_WEIGHT:g}")] = 1.0,
                           ) -> Response:
        """Search by example: the image is embedded, not stored."""
        started = time.perf_counter()
        check(p)
        check_text("q", q.strip(), config.max_query_chars, too_long=413)
        parts = parts_of(q, image=True)
        if not (math.isfinite(weight) and query.MIN_WEIGHT <= weight <= query.MAX_WEIGHT):
            raise ApiError(400, f"weight must be a number from {query.MIN_WEIGHT:g} to {query.MAX_WEIGHT:g}")
        data = await file.read(config.max_file_bytes + 1)
        images.check(data, file.filename or "image", config.max_file_bytes, config.max_pixels)
        deadline = Deadline(config.search_deadline_s)
        made = await query_vector(b, parts, data, weight, deadline)
        embed_ms = (time.perf_counter() - started) * 1000
        return await run_search(b, made.vector, None, made.model_id, p, deadline, started, embed_ms, made.truncated)

    @routes.get("/api/search/next", response_model=schemas.SearchResult, responses=ERRORS,
                summary="The next page of a search",
                description="The page a search's `next` cursor names: the same query vector, collection, filters "
                            "and page size, read from the cursor, so nothing is embedded or uploaded again and the "
                            "index is asked for this page's hits only. A cursor is opaque and signed: one that was "
                            "changed or cut, or made by a gateway with another GATEWAY_CURSOR_KEY, is a 400.")
    async def next_page(b: Backend, cursor: Annotated[str, Query(
            min_length=1, max_length=MAX_CURSOR_CHARS, pattern=r"^[A-Za-z0-9_-]+$",
            description="the `next` of the page before")]) -> Response:
        """The next page of a search (text, image or similar), from its cursor."""
        started = time.perf_counter()
        try:
            request, truncated = signer.decode(cursor)
        except CursorError as err:
            raise ApiError(400, f"cursor: {err}; search again") from None
        if not 1 <= request.k <= config.max_k or request.offset + request.k > config.max_depth:
            raise ApiError(400, "cursor: it asks beyond this gateway's limits (GATEWAY_MAX_K, GATEWAY_MAX_DEPTH); "
                                "search again")
        return await page(b, request, 0, request.k, Deadline(config.search_deadline_s), started, 0.0, truncated)

    @routes.get("/api/images/{image_id}/similar", response_model=schemas.SearchResult, responses=ERRORS,
                description=f"More like this: neighbours of a stored image, the image itself excluded. {PAGING_HELP}")
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
            "height": h.height, **image_urls(h.id, collection)}
