"""The gateway application: the routers of gateway/routes, middleware, error handlers, the page."""


import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.clients import Api, Backends
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.middleware import BodyLimit, HeadAsGet, Observe, SecurityHeaders
from gateway.routes import duplicates, images, meta, search
from semsearch_common.logs import Throttled

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
FAILURE_LOG_INTERVAL_S = 10.0


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
    app.add_middleware(HeadAsGet)  # innermost: the others see the request's own method
    app.add_middleware(BodyLimit, limit=config.max_request_bytes)
    app.add_middleware(Observe)
    app.add_middleware(SecurityHeaders)

    for area in (search, images, meta, duplicates):
        app.include_router(area.router(config))

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _install_error_handlers(app: FastAPI) -> None:
    def reply(err: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else {}
        if err.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    # During an outage every request fails alike: one line per status and message each interval, with a count.
    failures = Throttled(log, FAILURE_LOG_INTERVAL_S)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        if err.status >= 500:
            failures.log(logging.WARNING, f"{err.status} {err.message}", "%s %s -> %d: %s", request.method,
                         request.url.path, err.status, err.message)
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
