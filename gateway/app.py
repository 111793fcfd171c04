"""The HTTP API and the page: validate, call the embedder and the index with deadlines, map their errors."""


import asyncio
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import images, schemas, upload
from gateway.clients import Api, Backends, Deadline
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.middleware import BodyLimit, Observe, SecurityHeaders
from protos.semsearch.v1 import index_pb2

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
IMAGE_CACHE = "public, max-age=31536000, immutable"  # an id's bytes never change; a new upload gets a new id
MAX_LABELS = 50
ERRORS = {code: {"model": schemas.ErrorBody} for code in (400, 404, 409, 413, 415, 429, 503, 504)}
ImageId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="image id")]
bearer = HTTPBearer(auto_error=False, description="GATEWAY_TOKEN, when the gateway has one")


def create_app(config: GatewayConfig, connect: Callable[[GatewayConfig], Api] = Backends) -> FastAPI:
    """The ASGI application; gRPC channels (`connect`: a fake in route tests) open on startup, close on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = connect(config)  # grpc.aio channels belong to the running loop
        log.info("gateway up: embedder %s, index %s, writes %s", config.embedder_addr, config.index_addr,
                 "need a token" if config.token else "open")
        yield
        await app.state.backends.close()

    app = FastAPI(title="semsearch gateway", version="1", lifespan=lifespan, openapi_url="/api/openapi.json",
                  docs_url=None, redoc_url=None,  # their CDN scripts would need a looser CSP
                  description="Semantic image search: search by words or by example, add and remove pictures.")
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=config.max_request_bytes)
    app.add_middleware(Observe)
    app.add_middleware(SecurityHeaders)

    def backends(request: Request) -> Backends:
        return request.app.state.backends

    async def require_token(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if not config.token:
            return
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), config.token.encode()):
            raise ApiError(401, "this endpoint needs the gateway's bearer token")

    Backend = Annotated[Backends, Depends(backends)]
    K = Annotated[int, Query(ge=1, le=config.max_k, description="hits to return")]
    Offset = Annotated[int, Query(ge=0, lt=config.max_depth, description="hits to skip (for 'load more')")]
    Labels = Annotated[list[str], Query(description="only these labels (repeatable)")]
    MinScore = Annotated[float | None, Query(ge=-1.0, le=1.0, description="drop hits below this similarity")]

    def search_params(k: int, offset: int, label: list[str], min_score: float | None
                      ) -> tuple[int, index_pb2.Filter, float | None]:
        if offset + k > config.max_depth:
            raise ApiError(400, f"offset + k must not exceed {config.max_depth}")
        if min_score is not None and not math.isfinite(min_score):
            raise ApiError(400, "min_score must be a number between -1 and 1")
        labels = [lb for lb in label if lb]
        if len(labels) > MAX_LABELS:
            raise ApiError(400, f"at most {MAX_LABELS} labels")
        for lb in labels:
            _check_text("label", lb, 200)
        return offset + k, index_pb2.Filter(labels=labels), min_score

    async def run_search(b: Backends, vector: list[float] | None, image_id: int | None, model_id: str,
                         k: int, offset: int, label: list[str], min_score: float | None, deadline: Deadline,
                         started: float, embed_ms: float, truncated: bool = False) -> Response:
        depth, filt, floor = search_params(k, offset, label, min_score)
        t0 = time.perf_counter()
        if image_id is None:
            reply = await b.search(index_pb2.SearchRequest(vector=vector, k=depth, filter=filt, min_score=floor,
                                                           model_id=model_id), deadline)
        else:
            reply = await b.similar(index_pb2.SearchSimilarRequest(id=image_id, k=depth, filter=filt,
                                                                   min_score=floor), deadline)
        search_ms = (time.perf_counter() - t0) * 1000
        # Built as plain dicts: the hot path skips pydantic's validation of our own output (the model,
        # schemas.SearchResult, still documents it, and the schema-conformance fuzz test checks it).
        total_ms = (time.perf_counter() - started) * 1000
        return JSONResponse({
            "hits": [_hit(h) for h in reply.hits[offset:]], "offset": offset, "k": k,
            "has_more": len(reply.hits) == depth and depth < config.max_depth, "truncated": truncated,
            "timings": {"embed_ms": embed_ms, "search_ms": search_ms, "database_ms": reply.search_ms,
                        "total_ms": total_ms},
        }, headers={"Server-Timing": f"embed;dur={embed_ms:.1f}, search;dur={search_ms:.1f}, total;dur={total_ms:.1f}"})

    @app.get("/api/search", response_model=schemas.SearchResult, responses=ERRORS, tags=["search"])
    async def search_text(b: Backend, q: Annotated[str, Query(description="what to look for")], k: K = config.default_k,
                          offset: Offset = 0, label: Labels = [], min_score: MinScore = None  # noqa: B006
                          ) -> Response:
        """Search by words."""
        started = time.perf_counter()
        text = q.strip()
        if not text:
            raise ApiError(400, "the query is empty")
        _check_text("q", text, config.max_query_chars, too_long=413)
        search_params(k, offset, label, min_score)  # refuse bad parameters before spending an embedding
        deadline = Deadline(config.search_deadline_s)
        vector, model_id, truncated = await b.embed_text(text, deadline)
        embed_ms = (time.perf_counter() - started) * 1000
        return await run_search(b, vector, None, model_id, k, offset, label, min_score, deadline, started,
                                embed_ms, truncated)

    @app.post("/api/search/image", response_model=schemas.SearchResult, responses=ERRORS, tags=["search"])
    async def search_image(b: Backend, file: Annotated[UploadFile, File(description="the example image")],
                           k: K = config.default_k, offset: Offset = 0, label: Labels = [],  # noqa: B006
                           min_score: MinScore = None) -> Response:
        """Search by example: the image is embedded, not stored."""
        started = time.perf_counter()
        search_params(k, offset, label, min_score)
        data = await file.read(config.max_file_bytes + 1)
        images.check(data, file.filename or "image", config.max_file_bytes, config.max_pixels)
        deadline = Deadline(config.search_deadline_s)
        reply = await b.embed_images([("query", data)], 0, deadline)
        result = reply.results[0]
        if result.HasField("error"):
            raise ApiError(upload.ITEM_HTTP.get(result.error.code, 400), result.error.message)
        embed_ms = (time.perf_counter() - started) * 1000
        return await run_search(b, list(result.embedding), None, reply.model_id, k, offset, label, min_score,
                                deadline, started, embed_ms)

    @app.get("/api/images/{image_id}/similar", response_model=schemas.SearchResult, responses=ERRORS,
             tags=["search"])
    async def similar(b: Backend, image_id: ImageId, k: K = config.default_k, offset: Offset = 0, label: Labels = [],  # noqa: B006
                      min_score: MinScore = None) -> Response:
        """More like this: neighbours of a stored image, the image itself excluded."""
        started = time.perf_counter()
        return await run_search(b, None, image_id, "", k, offset, label, min_score,
                                Deadline(config.search_deadline_s), started, 0.0)

    @app.post("/api/images", response_model=schemas.UploadResult, status_code=201, tags=["images"],
              dependencies=[Depends(require_token)],
              responses={**ERRORS, 200: {"model": schemas.UploadResult, "description": "every file was stored already"},
                         401: {"model": schemas.ErrorBody},
                         **{code: {"model": schemas.UploadFailure, "description": "no file was stored"}
                            for code in (400, 409, 413, 415, 507)}})
    async def add_images(b: Backend, files: Annotated[list[UploadFile], File(description="one or more images")],
                         label: Annotated[str, Form(description="label for all the files")] = "",
                         source: Annotated[str, Form(description="where they come from")] = "upload") -> Response:
        """Add pictures; each file gets its own outcome (created, already present, or its error)."""
        if len(files) > config.max_files:
            raise ApiError(413, f"{len(files)} files; at most {config.max_files} per request")
        label, source = label.strip(), source.strip() or "upload"
        _check_text("label", label, 200)
        _check_text("source", source, 200)
        received = [upload.Upload(f.filename or f"file {i + 1}", await f.read(config.max_file_bytes + 1))
                    for i, f in enumerate(files)]
        outcomes = await upload.add(received, label, source, b, config, Deadline(config.upload_deadline_s))
        body = schemas.UploadResult(results=outcomes, created=sum(o.outcome == "created" for o in outcomes),
                                    existing=sum(o.outcome == "exists" for o in outcomes),
                                    failed=sum(o.outcome == "error" for o in outcomes)).model_dump()
        status = upload.overall_status(outcomes)
        if status >= 400:  # nothing stored: an error body (as everywhere) that still lists each file
            body.update(ApiError(status, outcomes[0].message or "no file was stored").body())
        return JSONResponse(body, status_code=status)

    @app.get("/api/images/{image_id}", response_model=schemas.ImageInfo, responses=ERRORS, tags=["images"])
    async def image_info(b: Backend, image_id: ImageId) -> schemas.ImageInfo:
        """Metadata of one image."""
        m = await b.get(image_id, Deadline(config.search_deadline_s))
        return schemas.ImageInfo(
            id=m.id, sha256=m.sha256, label=m.label, source=m.source, file_name=m.file_name, width=m.width,
            height=m.height, content_type=m.content_type, size_bytes=m.size_bytes, model_id=m.model_id,
            created_at=m.created_at, thumbnail_url=f"/images/{m.id}/thumb", image_url=f"/images/{m.id}")

    @app.delete("/api/images/{image_id}", response_model=schemas.Deleted, tags=["images"],
                dependencies=[Depends(require_token)], responses={401: {"model": schemas.ErrorBody}, **ERRORS})
    async def delete_image(b: Backend, image_id: ImageId) -> schemas.Deleted:
        """Remove an image, its vector and its files."""
        if not await b.delete(image_id, Deadline(config.search_deadline_s)):
            raise ApiError(404, f"no image with id {image_id}")
        return schemas.Deleted(deleted=image_id)

    async def serve_image(b: Backends, request: Request, image_id: int, thumbnail: bool) -> Response:
        first, body = await b.open_image(image_id, thumbnail, Deadline(config.upload_deadline_s))
        etag = f'"{first.sha256}{"-thumb" if thumbnail else ""}"'
        headers = {"ETag": etag, "Cache-Control": IMAGE_CACHE}
        if etag in request.headers.get("if-none-match", ""):
            await body.aclose()
            return Response(status_code=304, headers=headers)
        headers["Content-Length"] = str(first.total_size)
        # Only the image types we decode go out as such: anything else another index client stored (HTML,
        # SVG, a header-breaking string) is served as opaque bytes, so no browser runs it as a page.
        media_type = first.content_type if first.content_type in images.SERVED_TYPES else "application/octet-stream"
        ext = media_type.rsplit("/", 1)[-1] if media_type in images.SERVED_TYPES else "bin"
        headers["Content-Disposition"] = f'inline; filename="{image_id}{"-thumb" if thumbnail else ""}.{ext}"'
        return StreamingResponse(body, media_type=media_type, headers=headers)

    image_responses = {200: {"content": {"image/*": {}}, "description": "the image bytes"}, 304: {}, **ERRORS}

    @app.get("/images/{image_id}", response_class=Response, responses=image_responses, tags=["images"])
    async def original(b: Backend, request: Request, image_id: ImageId) -> Response:
        """The original file, as uploaded."""
        return await serve_image(b, request, image_id, False)

    @app.get("/images/{image_id}/thumb", response_class=Response, responses=image_responses, tags=["images"])
    async def thumbnail(b: Backend, request: Request, image_id: ImageId) -> Response:
        """A small JPEG of the image."""
        return await serve_image(b, request, image_id, True)

    @app.get("/api/labels", response_model=list[schemas.Label], responses=ERRORS, tags=["collection"])
    async def labels(b: Backend) -> list[schemas.Label]:
        """Every label with its number of images."""
        rows = await b.labels(Deadline(config.search_deadline_s))
        return [schemas.Label(label=r.label, count=r.count) for r in rows if r.label]

    @app.get("/api/stats", response_model=schemas.Stats, responses=ERRORS, tags=["collection"])
    async def stats(b: Backend) -> schemas.Stats:
        """Collection size, model, precision, provider and database backend."""
        deadline = Deadline(config.search_deadline_s)
        answers = await asyncio.gather(b.stats(deadline), b.model_info(deadline), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        s, m = answers
        return schemas.Stats(
            count=s.count, backend=s.backend, index_state=s.index_state, collection_models=list(s.model_ids),
            model_id=m.model_id, model_name=m.name, precision=m.precision, providers=list(m.providers),
            semantic=m.semantic, dim=m.dim, write_token_required=bool(config.token),
            limits=schemas.Limits(max_file_bytes=config.max_file_bytes, max_request_bytes=config.max_request_bytes,
                                  max_files=config.max_files, max_query_chars=config.max_query_chars,
                                  max_k=config.max_k, max_depth=config.max_depth))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.Ready, tags=["operations"],
             responses={503: {"model": schemas.Ready, "description": "a backend is not serving"}})
    async def readyz(b: Backend) -> Response:
        """Both services answer SERVING (readiness)."""
        up = await b.serving(Deadline(2.0))
        body = schemas.Ready(ready=all(up.values()), embedder=up["embedder"], index=up["index"])
        headers = {} if body.ready else {"Retry-After": str(config.retry_after_s)}
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503, headers=headers)

    @app.get("/metrics", response_class=Response, tags=["operations"])
    async def metrics() -> Response:
        """Prometheus metrics of the gateway."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _hit(h: index_pb2.Hit) -> dict[str, object]:
    return {"id": h.id, "score": round(h.score, 5), "label": h.label, "source": h.source, "width": h.width,
            "height": h.height, "thumbnail_url": f"/images/{h.id}/thumb", "image_url": f"/images/{h.id}"}


def _check_text(name: str, value: str, limit: int, too_long: int = 400) -> None:
    if len(value) > limit:
        raise ApiError(too_long, f"{name} is {len(value)} characters; at most {limit}")
    # Postgres text cannot hold NUL, and control characters are never meant: refuse them here.
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise ApiError(400, f"{name} contains control characters")


def _install_error_handlers(app: FastAPI) -> None:
    def reply(err: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else {}
        if err.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        if err.status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, err.status, err.message)
        return reply(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors()[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "body"))
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return reply(ApiError(400, "; ".join(parts) or "invalid request"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = err.detail if isinstance(err.detail, str) else "request refused"
        if err.status_code == 404 and message == "Not Found":
            message = f"nothing at {request.url.path}"
        return JSONResponse(ApiError(err.status_code, message).body(), status_code=err.status_code,
                            headers=getattr(err, "headers", None))
