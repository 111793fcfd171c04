"""Async gRPC clients of the embedder and the index: one reusable channel each, deadlines, error mapping."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from prometheus_client import Counter, Histogram

from gateway.config import GatewayConfig
from gateway.errors import ApiError, from_rpc
from gateway.limits import Limits, LimitsCache, of_services
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc
from semsearch_common import channels

log = logging.getLogger(__name__)
T = TypeVar("T")
# The bytes GetImage streams, by the name the image routes use ("" = the original).
VARIANTS = {"": index_pb2.IMAGE_VARIANT_ORIGINAL, "thumb": index_pb2.IMAGE_VARIANT_THUMBNAIL,
            "display": index_pb2.IMAGE_VARIANT_DISPLAY}

BACKEND_CALLS = Counter("gateway_backend_calls", "gRPC calls to the backends", ["backend", "method", "code"])
BACKEND_LATENCY = Histogram("gateway_backend_seconds", "gRPC call latency", ["backend", "method"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LIMITS_DEADLINE_S = 2.0
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined] # grpc-stubs lacks it: what read() answers at a stream's end


class Deadline:
    """One time budget for a whole HTTP request, shared by the calls it makes."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; at least a millisecond so gRPC reports DEADLINE_EXCEEDED itself."""
        return max(0.001, self.end - time.monotonic())


async def guarded(backend: str, method: str, call: Awaitable[T], retry_after: int) -> T:
    """Await one call to `backend`; a failure leaves as an ApiError, and every call is counted and timed."""
    started = time.perf_counter()
    code = "OK"
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        code = err.code().name
        log.debug("%s.%s failed: %s %s", backend, method, code, err.details())
        raise from_rpc(err, backend, retry_after) from None
    finally:
        BACKEND_CALLS.labels(backend, method, code).inc()
        BACKEND_LATENCY.labels(backend, method).observe(time.perf_counter() - started)


async def once_more_if_going_away(make_call: Callable[[], Awaitable[T]]) -> T:
    """Await a call; once more if it was cut off by its connection going away.

    The services' connections age out every few minutes (semsearch_common.server: so callers find new
    replicas), and gRPC can cut off a call caught at that moment with UNAVAILABLE "GOAWAY received" even
    though the service is up. Every call the gateway makes is safe to repeat (reads, and writes keyed by
    sha256 or id), so it is sent again at once on a fresh connection; any other failure stands.
    """
    try:
        return await make_call()
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.UNAVAILABLE or "GOAWAY" not in (err.details() or ""):
            raise
        log.info("a call was cut off as its connection went away (%s); sending it again", err.details())
        return await make_call()


class Api(Protocol):
    """What the routes need from the services (Backends, or a fake in route tests)."""

    async def close(self) -> None: ...
    async def embed_texts(self, texts: list[str], deadline: Deadline) -> embedder_pb2.EmbedTextsResponse: ...
    async def embed_images(self, images: list[tuple[str, bytes]], thumbnail_size: int,
                           deadline: Deadline) -> embedder_pb2.EmbedImagesResponse: ...
    async def model_info(self, deadline: Deadline) -> embedder_pb2.ModelInfo: ...
    async def limits(self, deadline: Deadline) -> Limits: ...
    async def search(self, request: index_pb2.SearchRequest, deadline: Deadline) -> index_pb2.SearchResponse: ...
    async def similar(self, request: index_pb2.SearchSimilarRequest,
                      deadline: Deadline) -> index_pb2.SearchResponse: ...
    async def upsert(self, items: list[index_pb2.UpsertItem], deadline: Deadline,
                     collection: str = "") -> index_pb2.UpsertResponse: ...
    async def get(self, image_id: int, deadline: Deadline, collection: str = "") -> index_pb2.ImageMeta: ...
    async def delete(self, image_id: int, deadline: Deadline, collection: str = "") -> bool: ...
    async def labels(self, deadline: Deadline, collection: str = "") -> list[index_pb2.LabelCount]: ...
    async def stats(self, deadline: Deadline, collection: str = "") -> index_pb2.StatsResponse: ...
    async def collections(self, deadline: Deadline) -> list[index_pb2.Collection]: ...
    async def open_image(self, image_id: int, variant: str, deadline: Deadline,
                         collection: str = "") -> tuple[index_pb2.ImageChunk, AsyncGenerator[bytes, None]]: ...
    async def serving(self, deadline: Deadline) -> dict[str, bool]: ...
    async def update_tags(self, request: index_pb2.UpdateTagsRequest,
                          deadline: Deadline) -> index_pb2.UpdateTagsResponse: ...
    async def tags(self, deadline: Deadline, collection: str = "") -> list[index_pb2.TagCount]: ...
    async def duplicates(self, request: index_pb2.FindDuplicatesRequest,
                         deadline: Deadline) -> index_pb2.FindDuplicatesResponse: ...


class Backends:
    """The two services behind the gateway; create inside the event loop, close on shutdown."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.embedder_channel = channels.aio_channel(config.embedder_addr)
        self.index_channel = channels.aio_channel(config.index_addr)
        self.embedder = embedder_pb2_grpc.EmbedderStub(self.embedder_channel)
        self.index = index_pb2_grpc.IndexStub(self.index_channel)
        self._limits = LimitsCache()

    async def close(self) -> None:
        """Close both channels."""
        # None is grpc's default (cancel at once); grpc-stubs wrongly makes the argument required.
        await self.embedder_channel.close(None)
        await self.index_channel.close(None)

    async def _call(self, backend: str, method: str, request: Any, deadline: Deadline) -> Any:
        """Call backend.method(request) within the deadline; failures leave as ApiError, all are counted."""
        stub = self.embedder if backend == "embedder" else self.index
        return await self._await(backend, method, once_more_if_going_away(
            lambda: getattr(stub, method)(request, timeout=deadline.remaining())))

    async def _await(self, backend: str, method: str, call: Awaitable[T]) -> T:
        return await guarded(backend, method, call, self.config.retry_after_s)

    # -- embedder ---------------------------------------------------------------------------------

    async def embed_texts(self, texts: list[str], deadline: Deadline) -> embedder_pb2.EmbedTextsResponse:
        """Embed texts in one call; per-item errors (and the truncated flags) stay inside the response."""
        request = embedder_pb2.EmbedTextsRequest(texts=texts)
        reply: embedder_pb2.EmbedTextsResponse = await self._call("embedder", "EmbedTexts", request, deadline)
        return reply

    async def embed_images(self, images: list[tuple[str, bytes]], thumbnail_size: int,
                           deadline: Deadline) -> embedder_pb2.EmbedImagesResponse:
        """Embed (key, bytes) pairs in one call; per-item errors stay inside the response."""
        request = embedder_pb2.EmbedImagesRequest(
            images=[embedder_pb2.ImageInput(key=key, data=data) for key, data in images],
            thumbnail_size=thumbnail_size)
        reply: embedder_pb2.EmbedImagesResponse = await self._call("embedder", "EmbedImages", request, deadline)
        return reply

    async def model_info(self, deadline: Deadline) -> embedder_pb2.ModelInfo:
        """What model the embedder runs, and where."""
        reply: embedder_pb2.ModelInfo = await self._call("embedder", "GetModelInfo",
                                                         embedder_pb2.GetModelInfoRequest(), deadline)
        return reply

    # -- both -------------------------------------------------------------------------------------

    async def limits(self, deadline: Deadline) -> Limits:
        """What one EmbedImages or Upsert call may carry, as the services publish it (cached)."""
        return await self._limits.get(lambda: self._fetch_limits(deadline))

    async def _fetch_limits(self, deadline: Deadline) -> Limits:
        # A short budget of its own: asking must not eat an upload's time when a service is slow.
        budget = Deadline(min(LIMITS_DEADLINE_S, deadline.remaining()))
        info, stats = await asyncio.gather(self.model_info(budget), self.stats(budget))
        return of_services(info, stats)

    # -- index ------------------------------------------------------------------------------------

    async def search(self, request: index_pb2.SearchRequest, deadline: Deadline) -> index_pb2.SearchResponse:
        """Nearest neighbours of a vector."""
        reply: index_pb2.SearchResponse = await self._call("index", "Search", request, deadline)
        return reply

    async def similar(self, request: index_pb2.SearchSimilarRequest,
                      deadline: Deadline) -> index_pb2.SearchResponse:
        """Nearest neighbours of a stored image."""
        reply: index_pb2.SearchResponse = await self._call("index", "SearchSimilar", request, deadline)
        return reply

    async def upsert(self, items: list[index_pb2.UpsertItem], deadline: Deadline,
                     collection: str = "") -> index_pb2.UpsertResponse:
        """Store a batch in a collection ("" = the default alias); per-item errors stay inside the response."""
        request = index_pb2.UpsertRequest(items=items, collection=collection)
        reply: index_pb2.UpsertResponse = await self._call("index", "Upsert", request, deadline)
        return reply

    async def get(self, image_id: int, deadline: Deadline, collection: str = "") -> index_pb2.ImageMeta:
        """Metadata of one image; 404 when unknown."""
        request = index_pb2.GetRequest(ids=[image_id], collection=collection)
        response = await self._call("index", "Get", request, deadline)
        if not response.images:
            raise ApiError(404, f"no image with id {image_id}")
        meta: index_pb2.ImageMeta = response.images[0]
        return meta

    async def delete(self, image_id: int, deadline: Deadline, collection: str = "") -> bool:
        """Remove one image from a collection; False when it did not exist."""
        request = index_pb2.DeleteRequest(ids=[image_id], collection=collection)
        response = await self._call("index", "Delete", request, deadline)
        return image_id in response.deleted

    async def labels(self, deadline: Deadline, collection: str = "") -> list[index_pb2.LabelCount]:
        """Every label of a collection and its count."""
        request = index_pb2.ListLabelsRequest(collection=collection)
        response = await self._call("index", "ListLabels", request, deadline)
        return list(response.labels)

    async def stats(self, deadline: Deadline, collection: str = "") -> index_pb2.StatsResponse:
        """Collection size, backend and model ids."""
        request = index_pb2.StatsRequest(collection=collection)
        reply: index_pb2.StatsResponse = await self._call("index", "Stats", request, deadline)
        return reply

    async def collections(self, deadline: Deadline) -> list[index_pb2.Collection]:
        """Every collection with its model, dimension, size and aliases."""
        response = await self._call("index", "ListCollections", index_pb2.ListCollectionsRequest(), deadline)
        return list(response.collections)

    async def open_image(self, image_id: int, variant: str, deadline: Deadline,
                         collection: str = "") -> tuple[index_pb2.ImageChunk, AsyncGenerator[bytes, None]]:
        """The first chunk (content type, size, hash) and an iterator over all the bytes of a VARIANTS name.

        Reading the first chunk before answering turns NOT_FOUND into a 404 instead of a broken stream.
        """
        request = index_pb2.GetImageRequest(id=image_id, variant=VARIANTS[variant], collection=collection)
        call = self.index.GetImage(request, timeout=deadline.remaining())
        try:
            first = await self._await("index", "GetImage", call.read())
        except BaseException:  # an error, or the caller's own deadline cancelling the wait (asyncio.wait_for)
            call.cancel()
            raise
        if first is EOF:
            raise ApiError(404, f"no image with id {image_id}")

        async def body() -> AsyncGenerator[bytes, None]:
            try:
                yield first.data
                while (chunk := await call.read()) is not EOF:
                    yield chunk.data
            except grpc.aio.AioRpcError as err:
                # Headers are out: all we can do is end short, so the client sees a truncated body.
                log.warning("image %d: stream broke after the first chunk: %s", image_id, err.code().name)
            finally:
                call.cancel()  # the HTTP client went away: stop the stream upstream too

        return first, body()

    async def duplicates(self, request: index_pb2.FindDuplicatesRequest,
                         deadline: Deadline) -> index_pb2.FindDuplicatesResponse:
        """One page of the near-duplicate scan."""
        reply: index_pb2.FindDuplicatesResponse = await self._call("index", "FindDuplicates", request, deadline)
        return reply

    # -- health -----------------------------------------------------------------------------------

    async def serving(self, deadline: Deadline) -> dict[str, bool]:
        """Whether each backend's health service says SERVING (both asked at once)."""

        embedder, index = await asyncio.gather(channels.aio_is_serving(self.embedder_channel, deadline.remaining()),
                                               channels.aio_is_serving(self.index_channel, deadline.remaining()))
        return {"embedder": embedder, "index": index}

    # -- tags -------------------------------------------------------------------------------------

    async def update_tags(self, request: index_pb2.UpdateTagsRequest,
                          deadline: Deadline) -> index_pb2.UpdateTagsResponse:
        """Add and remove tags of several images; the reply lists the ids that exist."""
        reply: index_pb2.UpdateTagsResponse = await self._call("index", "UpdateTags", request, deadline)
        return reply

    async def tags(self, deadline: Deadline, collection: str = "") -> list[index_pb2.TagCount]:
        """Every tag of a collection and its count."""
        response = await self._call("index", "ListTags", index_pb2.ListTagsRequest(collection=collection), deadline)
        return list(response.tags)
