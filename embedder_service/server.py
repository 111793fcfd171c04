"""The gRPC face of the embedder: proto <-> engine. Errors leave as domain exceptions (semsearch_common.errors)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from typing import Protocol

import grpc
from google.rpc import status_pb2

from embedder_service import facts
from embedder_service.config import EmbedderConfig
from embedder_service.engine import ImageResult, TextError, TextResult
from embedder_service.models.bundle import Bundle
from embedder_service.preprocess import ImageError
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc
from semsearch_common import errors, status
from semsearch_common.enums import enum_value
from semsearch_common.server import Server, ServerSettings
from semsearch_common.server import create_server as create_grpc_server

log = logging.getLogger(__name__)

# What a stream's reader hands the responder: a response being computed, the error that ended the reading,
# or None at the end of the requests.
Queued = futures.Future[embedder_pb2.EmbedImagesResponse] | Exception | None

SERVICE = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
# Requests of one stream being decoded and embedded at once; more wait (gRPC flow control).
STREAM_IN_FLIGHT = 4
# Each open stream holds a worker thread for its whole life, so there are more than the platform's default.
WORKERS = 32


class ModelLike(Protocol):
    """What the servicer reads of a model (ClipModel): its bundle and providers."""

    @property
    def bundle(self) -> Bundle: ...

    @property
    def providers(self) -> list[str]: ...


class EngineLike(Protocol):
    """What the servicer needs of an engine (Engine; servicer tests pass a fake)."""

    @property
    def model(self) -> ModelLike: ...

    def embed_images(self, datas: Sequence[bytes], thumbnail_size: int = 0, timeout: float | None = None,
                     wait_for_room: bool = False) -> list[ImageResult | ImageError]: ...

    def embed_texts(self, texts: Sequence[str], timeout: float | None = None) -> list[TextResult | TextError]: ...

    def close(self) -> None: ...


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    """Answers UNAVAILABLE (MODEL_LOADING) until an engine is attached, then serves it."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self.engine: EngineLike | None = None

    def EmbedImages(self, request: embedder_pb2.EmbedImagesRequest,
                    context: grpc.ServicerContext) -> embedder_pb2.EmbedImagesResponse:
        return self._images(self._engine(), request, context)

    def EmbedTexts(self, request: embedder_pb2.EmbedTextsRequest,
                   context: grpc.ServicerContext) -> embedder_pb2.EmbedTextsResponse:
        return self._texts(self._engine(), request, context)

    def GetModelInfo(self, request: embedder_pb2.GetModelInfoRequest,
                     context: grpc.ServicerContext) -> embedder_pb2.ModelInfo:
        return self._info(self._engine())

    def StreamEmbedImages(self, requests: Iterator[embedder_pb2.EmbedImagesRequest],
                          context: grpc.ServicerContext) -> Iterator[embedder_pb2.EmbedImagesResponse]:
        engine = self._engine()
        # A reader thread starts each request as it arrives; responses leave in request order.
        # The bounded queue is the back-pressure: the reader stops pulling when it is full.
        results: queue.Queue[Queued] = queue.Queue(maxsize=STREAM_IN_FLIGHT)
        pool = futures.ThreadPoolExecutor(STREAM_IN_FLIGHT, thread_name_prefix="stream")

        def put(item: Queued) -> None:
            while context.is_active():
                try:
                    return results.put(item, timeout=0.5)
                except queue.Full:
                    continue

        def read() -> None:
            try:
                for request in requests:
                    put(pool.submit(self._images, engine, request, context, True))
            except Exception as exc:  # the client went away or sent garbage
                put(exc)
            put(None)

        threading.Thread(target=read, daemon=True, name="stream-reader").start()
        try:
            while (item := _next(results, context)) is not None:
                if isinstance(item, errors.ServiceError):
                    raise item  # e.g. undecodable request bytes: the call's status says so
                if isinstance(item, Exception):
                    break  # the client is gone: nobody to answer
                yield item.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _engine(self) -> EngineLike:
        if self.engine is None:
            raise errors.Unavailable("the model is still loading", reason=errors.Reason.MODEL_LOADING)
        return self.engine

    def _images(self, engine: EngineLike, request: embedder_pb2.EmbedImagesRequest,
                context: grpc.ServicerContext, wait_for_room: bool = False) -> embedder_pb2.EmbedImagesResponse:
        if len(request.images) > self.config.max_images_per_request:
            raise errors.ResourceExhausted(f"{len(request.images)} images in one request; the limit is "
                                           f"{self.config.max_images_per_request}", reason=errors.Reason.TOO_LARGE)
        if request.thumbnail_size > self.config.thumbnail_max:
            raise errors.InvalidArgument(f"thumbnail_size {request.thumbnail_size} exceeds {self.config.thumbnail_max}")
        # The interceptor bounds this: the caller's deadline, else the server default; None only on streams.
        results = engine.embed_images([i.data for i in request.images], request.thumbnail_size,
                                      context.time_remaining(), wait_for_room)
        out = embedder_pb2.EmbedImagesResponse(request_id=request.request_id,
                                               model_id=engine.model.bundle.model_id)
        for item, result in zip(request.images, results, strict=True):
            if isinstance(result, Exception):
                out.results.add(key=item.key, error=item_error(result))
            else:
                out.results.add(key=item.key, embedding=result.embedding, width=result.width,
                                height=result.height, content_type=result.content_type,
                                thumbnail=result.thumbnail or b"", facts=facts.to_proto(result.facts))
        return out

    def _texts(self, engine: EngineLike, request: embedder_pb2.EmbedTextsRequest,
               context: grpc.ServicerContext) -> embedder_pb2.EmbedTextsResponse:
        if len(request.texts) > self.config.max_texts_per_request:
            raise errors.ResourceExhausted(f"{len(request.texts)} texts in one request; the limit is "
                                           f"{self.config.max_texts_per_request}", reason=errors.Reason.TOO_LARGE)
        results = engine.embed_texts(list(request.texts), context.time_remaining())
        out = embedder_pb2.EmbedTextsResponse(model_id=engine.model.bundle.model_id)
        for result in results:
            if isinstance(result, Exception):
                out.results.add(error=item_error(result))
            else:
                out.results.add(embedding=result.embedding, token_count=result.token_count,
                                truncated=result.truncated)
        return out

    def _info(self, engine: EngineLike) -> embedder_pb2.ModelInfo:
        b, c = engine.model.bundle, self.config
        return embedder_pb2.ModelInfo(
            name=b.name, version=b.version, model_id=b.model_id, dim=b.dim, image_size=b.image_size,
            context_length=b.context_length,
            # protoc's stubs type an enum field as the enum's class, which the plain int of a value is not.
            precision=enum_value(embedder_pb2.Precision, b.precision),  # type: ignore[arg-type]
            providers=engine.model.providers, max_batch=c.max_batch, source=b.source, semantic=b.semantic,
            max_images_per_request=c.max_images_per_request, max_texts_per_request=c.max_texts_per_request,
            max_message_bytes=c.max_receive_mb * 1024 * 1024, max_thumbnail_size=c.thumbnail_max,
            max_text_chars=c.max_text_chars, max_image_bytes=c.max_image_bytes, max_image_pixels=c.max_pixels,
        )


def item_error(err: errors.ServiceError) -> status_pb2.Status:
    """One failed item of a batch (an ImageError or TextError, both INVALID_ARGUMENT), with its ErrorInfo reason."""
    return status.to_proto(err)


def _next(results: queue.Queue[Queued], context: grpc.ServicerContext) -> Queued:
    """The next queued result, or None once the stream ends or its client is gone."""
    while True:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            if not context.is_active():
                return None


class EmbedderServer:
    """A started gRPC server with its servicer; health follows the model (attach) and shutdown (stop)."""

    def __init__(self, server: Server, servicer: EmbedderServicer) -> None:
        self.server, self.servicer, self.port = server, servicer, server.port

    def attach(self, engine: EngineLike) -> None:
        """Start serving the engine and report SERVING."""
        self.servicer.engine = engine
        self.server.set_serving(True)

    def stop(self, grace: float, drain_s: float = 0.0) -> None:
        """NOT_SERVING, answer on for `drain_s`, give in-flight calls `grace` seconds, then release the engine."""
        self.server.stop(grace, drain_s)
        if self.servicer.engine is not None:
            self.servicer.engine.close()


def create_server(config: EmbedderConfig, engine: EngineLike | None = None) -> EmbedderServer:
    """Build and start the server on config.host:config.port (0 = any free port); NOT_SERVING until attach().

    Raises semsearch_common.server.PortInUse when the address is taken.
    """
    settings = ServerSettings(host=config.host, port=config.port, workers=WORKERS,
                              message_limit=config.max_receive_mb * 1024 * 1024, metrics_prefix="embedder")
    servicer = EmbedderServicer(config)
    server = create_grpc_server(settings, [SERVICE],
                                lambda s: embedder_pb2_grpc.add_EmbedderServicer_to_server(servicer, s))
    result = EmbedderServer(server, servicer)
    if engine is not None:
        result.attach(engine)
    return result
