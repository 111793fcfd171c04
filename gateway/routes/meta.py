"""Collection and operations routes: labels, stats, liveness, readiness, metrics."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import facts, schemas
from gateway.clients import Deadline
from gateway.config import GatewayConfig
from gateway.routes.common import ERRORS, Backend, Collection
from protos.semsearch.v1 import embedder_pb2, index_pb2
from semsearch_common.enums import enum_word


def router(config: GatewayConfig) -> APIRouter:
    """The collection and operations routes, with the limits config reports."""
    routes = APIRouter()

    @routes.get("/api/labels", response_model=list[schemas.Label], responses=ERRORS, tags=["collection"])
    async def labels(b: Backend, collection: Collection = "") -> list[schemas.Label]:
        """Every label of a collection with its number of images."""
        rows = await b.labels(Deadline(config.search_deadline_s), collection)
        return [schemas.Label(label=r.label, count=r.count) for r in rows if r.label]

    @routes.get("/api/stats", response_model=schemas.Stats, responses=ERRORS, tags=["collection"])
    async def stats(b: Backend, collection: Collection = "") -> schemas.Stats:
        """Collection size, model, precision, provider and database backend."""
        deadline = Deadline(config.search_deadline_s)
        s, m = await asyncio.gather(b.stats(deadline, collection), b.model_info(deadline), return_exceptions=True)
        if isinstance(s, BaseException):
            raise s
        if isinstance(m, BaseException):
            raise m
        stats = schemas.Stats(
            # The HTTP API keeps the contract's enums as the words it always had ("pgvector", "ready", "fp32").
            collection=s.collection, count=s.count, backend=enum_word(index_pb2.Backend, s.backend),
            index_state=enum_word(index_pb2.IndexState, s.index_state), collection_models=list(s.model_ids),
            model_id=m.model_id, model_name=m.name, precision=enum_word(embedder_pb2.Precision, m.precision),
            providers=list(m.providers),
            semantic=m.semantic, dim=m.dim, write_token_required=bool(config.token),
            limits=schemas.Limits(max_file_bytes=config.max_file_bytes, max_request_bytes=config.max_request_bytes,
                                  max_files=config.max_files, max_query_chars=config.max_query_chars,
                                  max_k=config.max_k, max_depth=config.max_depth))
        return stats.model_copy(update=index_health(s))

    @routes.get("/api/collections", response_model=list[schemas.CollectionInfo], responses=ERRORS,
                tags=["collection"])
    async def collections(b: Backend) -> list[schemas.CollectionInfo]:
        """Every collection with its model, dimension, size and the aliases that name it."""
        rows = await b.collections(Deadline(config.search_deadline_s))
        return [schemas.CollectionInfo(name=c.name, model_id=c.model_id, dim=c.dim, count=c.count,
                                       aliases=list(c.aliases)) for c in rows]

    @routes.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @routes.get("/readyz", response_model=schemas.Ready, tags=["operations"],
             responses={503: {"model": schemas.Ready, "description": "a backend is not serving"}})
    async def readyz(b: Backend) -> Response:
        """Both services answer SERVING (readiness)."""
        up = await b.serving(Deadline(2.0))
        body = schemas.Ready(ready=all(up.values()), embedder=up["embedder"], index=up["index"])
        headers = {} if body.ready else {"Retry-After": str(config.retry_after_s)}
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503, headers=headers)

    @routes.get("/metrics", response_class=Response, tags=["operations"])
    async def metrics() -> Response:
        """Prometheus metrics of the gateway."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return routes


def index_health(s: index_pb2.StatsResponse) -> dict[str, object]:
    """What Stats says about the quality and freshness of its answers: recall estimate, breadth, estimated count."""
    # The contract's 0 means "not measured" / "off"; the HTTP API says null, so a client never reads a recall of 0.
    measured = s.recall_queries > 0 and s.recall_measured_at > 0
    target = s.recall_target if s.recall_target > 0 else None
    return {"estimated": s.estimated, "recall_estimate": s.recall_estimate if measured else None,
            "recall_queries": s.recall_queries, "recall_measured_at": facts.iso_utc(s.recall_measured_at) if measured
            else None, "recall_target": target,
            "recall_below_target": measured and target is not None and s.recall_estimate < target,
            "search_breadth": s.search_breadth, "vector_type": s.vector_type,
            "reads_from_replica": s.reads_from_replica, "unindexed": s.unindexed_rows}
