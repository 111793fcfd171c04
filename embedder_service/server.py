"""The gRPC face of the embedder: proto <-> engine, exceptions -> status codes."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from embedder_service import metrics
from embedder_service.batching import Closed, Overloaded
from embedder_service.config import EmbedderConfig
from embedder_service.engine import DeadlineExceeded, Engine
from protos import serving
from protos.names import enum_value
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc

log = logging.getLogger(__name__)

SERVICE = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
# Requests of one stream being decoded and embedded at once; more wait (gRPC flow control).
STREAM_IN_FLIGHT = 4


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    """Answers UNAVAILABLE until an engine is attached, then serves it."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self.engine: Engine | None = None

    def EmbedImages(self, request: embedder_pb2.EmbedImagesRequest, context: grpc.ServicerContext):  # noqa: N802
        return self._answer("EmbedImages", context, lambda engine: self._images(engine, request, context))

    def EmbedTexts(self, request: embedder_pb2.EmbedTextsRequest, context: grpc.ServicerContext):  # noqa: N802
        return self._answer("EmbedTexts", context, lambda engine: self._texts(engine, request, context))

    def GetModelInfo(self, request: embedder_pb2.GetModelInfoRequest, context: grpc.ServicerContext):  # noqa: N802
        return self._answer("GetModelInfo", context, self._info)

    def StreamEmbedImages(self, requests: Iterator[embedder_pb2.EmbedImagesRequest],  # noqa: N802
                          context: grpc.ServicerContext) -> Iterator[embedder_pb2.EmbedImagesResponse]:
        try:
            engine = self._engine()
        except Closed as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        # A reader thread starts each request as it arrives; responses leave in request order.
        # The bounded queue is the back-pressure: the reader stops pulling when it is full.
        results: queue.Queue = queue.Queue(maxsize=STREAM_IN_FLIGHT)
        pool = futures.ThreadPoolExecutor(STREAM_IN_FLIGHT, thread_name_prefix="stream")

        def put(item: object) -> None:
            while context.is_active():
                try:
                    return results.put(item, timeout=0.5)
                except queue.Full:
                    continue

        def read() -> None:
            try:
                for request in requests:
                    put(pool.submit(self._images, engine, request, context, True))
            except Exception as exc:  # noqa: BLE001 - the client went away or sent garbage
                put(exc)
            put(None)

        threading.Thread(target=read, daemon=True, name="stream-reader").start()
        try:
            while (item := _next(results, context)) is not None:
                if isinstance(item, Exception):
                    break
                yield self._answer("StreamEmbedImages", context, lambda _: item.result())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _answer(self, method: str, context: grpc.ServicerContext, work: Callable[[Engine], object]):
        try:
            result = work(self._engine())
        except (ValueError, Overloaded, Closed, DeadlineExceeded) as exc:
            code, message = _status_of(exc), str(exc)
        except Exception:
            log.exception("%s failed", method)
            code, message = grpc.StatusCode.INTERNAL, f"internal error in {method}"
        else:
            metrics.REQUESTS.labels(method, "OK").inc()
            return result
        metrics.REQUESTS.labels(method, code.name).inc()
        context.abort(code, message)

    def _engine(self) -> Engine:
        if self.engine is None:
            raise Closed("the model is still loading")
        return self.engine

    def _images(self, engine: Engine, request: embedder_pb2.EmbedImagesRequest,
                context: grpc.ServicerContext, wait_for_room: bool = False) -> embedder_pb2.EmbedImagesResponse:
        if len(request.images) > self.config.max_images_per_request:
            raise Overloaded(f"{len(request.images)} images in one request; the limit is "
                             f"{self.config.max_images_per_request}")
        if request.thumbnail_size > self.config.thumbnail_max:
            raise ValueError(f"thumbnail_size {request.thumbnail_size} exceeds {self.config.thumbnail_max}")
        results = engine.embed_images([i.data for i in request.images], request.thumbnail_size,
                                      _remaining(context), wait_for_room)
        out = embedder_pb2.EmbedImagesResponse(request_id=request.request_id,
                                               model_id=engine.model.bundle.model_id)
        for item, result in zip(request.images, results, strict=True):
            if isinstance(result, Exception):
                out.results.add(key=item.key, error=_item_error(result))
            else:
                out.results.add(key=item.key, embedding=result.embedding, width=result.width,
                                height=result.height, content_type=result.content_type,
                                thumbnail=result.thumbnail or b"")
        return out

    def _texts(self, engine: Engine, request: embedder_pb2.EmbedTextsRequest,
               context: grpc.ServicerContext) -> embedder_pb2.EmbedTextsResponse:
        if len(request.texts) > self.config.max_texts_per_request:
            raise Overloaded(f"{len(request.texts)} texts in one request; the limit is "
                             f"{self.config.max_texts_per_request}")
        results = engine.embed_texts(list(request.texts), _remaining(context))
        out = embedder_pb2.EmbedTextsResponse(model_id=engine.model.bundle.model_id)
        for result in results:
            if isinstance(result, Exception):
                out.results.add(error=_item_error(result))
            else:
                out.results.add(embedding=result.embedding, token_count=result.token_count,
                                truncated=result.truncated)
        return out

    def _info(self, engine: Engine) -> embedder_pb2.ModelInfo:
        b, c = engine.model.bundle, self.config
        return embedder_pb2.ModelInfo(
            name=b.name, version=b.version, model_id=b.model_id, dim=b.dim, image_size=b.image_size,
            context_length=b.context_length, precision=enum_value(embedder_pb2.Precision, b.precision),
            providers=engine.model.providers, max_batch=c.max_batch, source=b.source, semantic=b.semantic,
            max_images_per_request=c.max_images_per_request, max_texts_per_request=c.max_texts_per_request,
            max_message_bytes=c.max_receive_mb * 1024 * 1024, max_thumbnail_size=c.thumbnail_max,
            max_text_chars=c.max_text_chars, max_image_bytes=c.max_image_bytes, max_image_pixels=c.max_pixels,
        )


def _next(results: queue.Queue, context: grpc.ServicerContext) -> object | None:
    """The next queued result, or None once the stream ends or its client is gone."""
    while True:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            if not context.is_active():
                return None


def _remaining(context: grpc.ServicerContext) -> float | None:
    """Seconds to the caller's deadline; None without one (gRPC then reports a huge number)."""
    left = context.time_remaining()
    return None if left is None or left > 1e6 else left


def _status_of(exc: Exception) -> grpc.StatusCode:
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, Closed):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.INVALID_ARGUMENT


def _item_error(exc: Exception) -> status_pb2.Status:
    return status_pb2.Status(code=_status_of(exc).value[0], message=str(exc))


class EmbedderServer:
    """A started gRPC server with its servicer and health state."""

    def __init__(self, server: grpc.Server, port: int, servicer: EmbedderServicer,
                 health_servicer: health.HealthServicer) -> None:
        self.server, self.port, self.servicer, self.health = server, port, servicer, health_servicer

    def attach(self, engine: Engine) -> None:
        """Start serving the engine and report SERVING."""
        self.servicer.engine = engine
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, finish in-flight calls within `grace` seconds, release the engine."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.servicer.engine is not None:
            self.servicer.engine.close()


def create_server(config: EmbedderConfig, engine: Engine | None = None) -> EmbedderServer:
    """Build and start the server on config.host:config.port (0 = any free port); NOT_SERVING until attach()."""
    limit = config.max_receive_mb * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="rpc"),
        options=serving.server_options(limit),
        interceptors=[serving.RejectUndecodable()],
    )
    servicer = EmbedderServicer(config)
    embedder_pb2_grpc.add_EmbedderServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    serving.enable_reflection((SERVICE, health.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    server.start()
    result = EmbedderServer(server, port, servicer, health_servicer)
    if engine is not None:
        result.attach(engine)
    return result
