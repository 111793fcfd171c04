"""A fake of the services behind the gateway, for route tests that need neither a model nor Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import grpc

from gateway.clients import Deadline, guarded
from gateway.config import GatewayConfig
from gateway.limits import FALLBACK, Limits
from protos.semsearch.v1 import embedder_pb2, index_pb2
from semsearch_common.errors import ServiceError
from semsearch_common.status import to_grpc

T = TypeVar("T")
MODEL_ID = "fake-model@1"


def rpc_error(err: ServiceError) -> grpc.aio.AioRpcError:
    """What a caller sees when a platform service raises `err`: code, message and the rich trailing metadata."""
    status = to_grpc(err)
    return grpc.aio.AioRpcError(status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata),
                                status.details)


def bare_error(code: grpc.StatusCode, details: str = "", trailing: tuple[tuple[str, str], ...] = ()
               ) -> grpc.aio.AioRpcError:
    """A failure without an ErrorInfo reason, as a channel that never connected raises."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


class FakeBackends:
    """Answers every call with a small canned reply, or raises the error set for its gRPC method in `failures`."""

    def __init__(self, config: GatewayConfig, limits: Limits = FALLBACK) -> None:
        self.config, self.published = config, limits
        self.failures: dict[str, grpc.aio.AioRpcError] = {}
        self.embedded: list[int] = []  # images per EmbedImages call
        self.stored: list[int] = []  # items per Upsert call
        self.asked: list[tuple[str, str]] = []  # (method, collection) of each index call that names one
        self.catalog = [index_pb2.Collection(name="main", model_id=MODEL_ID, dim=2, aliases=["default"])]
        self.variants: list[str] = []  # the variant of each open_image call
        self.duplicate_requests: list[index_pb2.FindDuplicatesRequest] = []
        self.duplicate_page = index_pb2.FindDuplicatesResponse(
            groups=[index_pb2.DuplicateGroup(members=[
                index_pb2.DuplicateMember(image=index_pb2.ImageMeta(id=3, file_name="a.jpg", width=40, height=30)),
                index_pb2.DuplicateMember(image=index_pb2.ImageMeta(id=9, file_name="b.jpg"), distance=0.02)])],
            last_id=10, scanned=10, total=25)

    async def _answer(self, backend: str, method: str, reply: T) -> T:
        async def call() -> T:
            if method in self.failures:
                raise self.failures[method]
            return reply

        # The real client's path from a failed call to an ApiError, so routes meet exactly what they would.
        return await guarded(backend, method, call(), self.config.retry_after_s)

    async def close(self) -> None:
        """Nothing to close."""

    async def embed_text(self, text: str, deadline: Deadline) -> tuple[list[float], str, bool]:
        """A constant unit vector."""
        return await self._answer("embedder", "EmbedTexts", ([1.0, 0.0], MODEL_ID, False))

    async def embed_images(self, images: list[tuple[str, bytes]], thumbnail_size: int,
                           deadline: Deadline) -> embedder_pb2.EmbedImagesResponse:
        """A unit vector per image."""
        self.embedded.append(len(images))
        results = [embedder_pb2.ImageEmbedding(key=key, embedding=[1.0, 0.0], width=8, height=8) for key, _ in images]
        return await self._answer("embedder", "EmbedImages",
                                  embedder_pb2.EmbedImagesResponse(results=results, model_id=MODEL_ID))

    async def model_info(self, deadline: Deadline) -> embedder_pb2.ModelInfo:
        """A small model."""
        return await self._answer("embedder", "GetModelInfo", embedder_pb2.ModelInfo(model_id=MODEL_ID, dim=2))

    async def limits(self, deadline: Deadline) -> Limits:
        """The limits given to the fake."""
        return self.published

    async def search(self, request: index_pb2.SearchRequest, deadline: Deadline) -> index_pb2.SearchResponse:
        """One hit."""
        self.asked.append(("Search", request.collection))
        return await self._answer("index", "Search", index_pb2.SearchResponse(hits=[index_pb2.Hit(id=1, score=1.0)]))

    async def similar(self, request: index_pb2.SearchSimilarRequest,
                      deadline: Deadline) -> index_pb2.SearchResponse:
        """No hits."""
        self.asked.append(("SearchSimilar", request.collection))
        return await self._answer("index", "SearchSimilar", index_pb2.SearchResponse())

    async def upsert(self, items: list[index_pb2.UpsertItem], deadline: Deadline,
                     collection: str = "") -> index_pb2.UpsertResponse:
        """Every item created, with ids from 1."""
        self.stored.append(len(items))
        self.asked.append(("Upsert", collection))
        results = [index_pb2.UpsertResult(id=n + 1, sha256=item.sha256, created=True) for n, item in enumerate(items)]
        return await self._answer("index", "Upsert", index_pb2.UpsertResponse(results=results))

    async def get(self, image_id: int, deadline: Deadline, collection: str = "") -> index_pb2.ImageMeta:
        """Metadata of any id."""
        self.asked.append(("Get", collection))
        return await self._answer("index", "Get", index_pb2.ImageMeta(id=image_id, model_id=MODEL_ID))

    async def delete(self, image_id: int, deadline: Deadline, collection: str = "") -> bool:
        """Every id existed."""
        self.asked.append(("Delete", collection))
        return await self._answer("index", "Delete", True)

    async def labels(self, deadline: Deadline, collection: str = "") -> list[index_pb2.LabelCount]:
        """No labels."""
        self.asked.append(("ListLabels", collection))
        return await self._answer("index", "ListLabels", [])

    async def stats(self, deadline: Deadline, collection: str = "") -> index_pb2.StatsResponse:
        """An empty collection."""
        self.asked.append(("Stats", collection))
        return await self._answer("index", "Stats", index_pb2.StatsResponse(collection=collection or "main"))

    async def collections(self, deadline: Deadline) -> list[index_pb2.Collection]:
        """The collections set on the fake (one by default)."""
        return await self._answer("index", "ListCollections", list(self.catalog))

    async def open_image(self, image_id: int, variant: str, deadline: Deadline,
                         collection: str = "") -> tuple[index_pb2.ImageChunk, AsyncIterator[bytes]]:
        """A three-byte file."""
        self.asked.append(("GetImage", collection))
        self.variants.append(variant)
        first = await self._answer("index", "GetImage", index_pb2.ImageChunk(
            data=b"abc", content_type="image/png", total_size=3, sha256="00"))

        async def body() -> AsyncIterator[bytes]:
            yield first.data

        return first, body()

    async def serving(self, deadline: Deadline) -> dict[str, bool]:
        """Both serving."""
        return {"embedder": True, "index": True}

    async def duplicates(self, request: index_pb2.FindDuplicatesRequest,
                         deadline: Deadline) -> index_pb2.FindDuplicatesResponse:
        """The page set on the fake (one group of two, 10 of 25 scanned)."""
        self.duplicate_requests.append(request)
        self.asked.append(("FindDuplicates", request.collection))
        return await self._answer("index", "FindDuplicates", self.duplicate_page)
