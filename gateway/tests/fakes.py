"""A fake of the services behind the gateway, for route tests that need neither a model nor Postgres."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc

from gateway.clients import Deadline, guarded
from gateway.config import GatewayConfig
from gateway.limits import FALLBACK, Limits
from protos.semsearch.v1 import common_pb2, embedder_pb2, index_pb2
from semsearch_common.errors import ServiceError
from semsearch_common.status import to_grpc

T = TypeVar("T")
MODEL_ID = "fake-model@1"
DIM = 8  # of the hash vectors embed_texts answers


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
        self.facts = common_pb2.PhotoFacts()  # what every embedded image "says" about itself
        self.upserted: list[index_pb2.UpsertItem] = []  # every item of every Upsert call
        self.texts: list[list[str]] = []  # the texts of each EmbedTexts call
        self.vectors: dict[str, list[float]] = {}  # what embed_texts answers for a text (else a hash vector)
        self.searches: list[index_pb2.SearchRequest | index_pb2.SearchSimilarRequest] = []  # each index search
        self.corpus = 1  # how many hits a search finds in all (ids 1.., best first), paged by k and offset
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

    async def embed_texts(self, texts: list[str], deadline: Deadline) -> embedder_pb2.EmbedTextsResponse:
        """The vector set in `vectors` for a text, else one made from its hash; texts over 77 characters are cut."""
        self.texts.append(list(texts))
        results = [embedder_pb2.TextEmbedding(embedding=self.vector_of(t), truncated=len(t) > 77) for t in texts]
        return await self._answer("embedder", "EmbedTexts",
                                  embedder_pb2.EmbedTextsResponse(results=results, model_id=MODEL_ID))

    def vector_of(self, text: str) -> list[float]:
        """What the fake embeds a text as: `vectors[text]`, else a fixed unit vector of DIM values from its hash."""
        if text in self.vectors:
            return self.vectors[text]
        raw = [b - 127.5 for b in hashlib.sha256(text.encode()).digest()[:DIM]]
        norm = math.sqrt(sum(x * x for x in raw))
        return [x / norm for x in raw]

    async def embed_images(self, images: list[tuple[str, bytes]], thumbnail_size: int,
                           deadline: Deadline) -> embedder_pb2.EmbedImagesResponse:
        """A unit vector per image."""
        self.embedded.append(len(images))
        results = [embedder_pb2.ImageEmbedding(key=key, embedding=[1.0, 0.0], width=8, height=8, facts=self.facts)
                   for key, _ in images]
        return await self._answer("embedder", "EmbedImages",
                                  embedder_pb2.EmbedImagesResponse(results=results, model_id=MODEL_ID))

    async def model_info(self, deadline: Deadline) -> embedder_pb2.ModelInfo:
        """A small model."""
        return await self._answer("embedder", "GetModelInfo", embedder_pb2.ModelInfo(model_id=MODEL_ID, dim=2))

    async def limits(self, deadline: Deadline) -> Limits:
        """The limits given to the fake."""
        return self.published

    async def search(self, request: index_pb2.SearchRequest, deadline: Deadline) -> index_pb2.SearchResponse:
        """Hits `offset + 1 ..` of a corpus of `corpus` hits (one by default), at most k."""
        self.asked.append(("Search", request.collection))
        self.searches.append(request)
        return await self._answer("index", "Search", index_pb2.SearchResponse(hits=self._hits(request)))

    async def similar(self, request: index_pb2.SearchSimilarRequest,
                      deadline: Deadline) -> index_pb2.SearchResponse:
        """Hits as for search, the image itself left out (so none of image 1 by default)."""
        self.asked.append(("SearchSimilar", request.collection))
        self.searches.append(request)
        hits = self._hits(request, leave_out=request.id)
        return await self._answer("index", "SearchSimilar", index_pb2.SearchResponse(hits=hits))

    def _hits(self, request: index_pb2.SearchRequest | index_pb2.SearchSimilarRequest,
              leave_out: int = 0) -> list[index_pb2.Hit]:
        ids = [i for i in range(1, self.corpus + 1) if i != leave_out][request.offset:request.offset + request.k]
        return [index_pb2.Hit(id=i, score=1.0 - (i - 1) / 1000) for i in ids]

    async def upsert(self, items: list[index_pb2.UpsertItem], deadline: Deadline,
                     collection: str = "") -> index_pb2.UpsertResponse:
        """Every item created, with ids from 1."""
        self.stored.append(len(items))
        self.upserted.extend(items)
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
        """An empty collection, or the reply set in `stats_reply` (its collection filled in)."""
        self.asked.append(("Stats", collection))
        reply = index_pb2.StatsResponse()
        reply.CopyFrom(self.stats_reply)
        reply.collection = collection or "main"
        return await self._answer("index", "Stats", reply)

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

    # What Stats answers besides the collection's name; a test assigns its own (never mutate this shared one).
    stats_reply = index_pb2.StatsResponse()

    # Tags: the ids UpdateTags finds (None: every id) and what ListTags answers; a test sets them on its fake.
    existing: frozenset[int] | None = None
    tag_counts: tuple[index_pb2.TagCount, ...] = ()

    async def update_tags(self, request: index_pb2.UpdateTagsRequest,
                          deadline: Deadline) -> index_pb2.UpdateTagsResponse:
        """Every id in `existing` (all of them when unset) updated."""
        self.asked.append(("UpdateTags", request.collection))
        found = [i for i in request.ids if self.existing is None or i in self.existing]
        return await self._answer("index", "UpdateTags", index_pb2.UpdateTagsResponse(updated=sorted(found)))

    async def tags(self, deadline: Deadline, collection: str = "") -> list[index_pb2.TagCount]:
        """The tag counts set on the fake."""
        self.asked.append(("ListTags", collection))
        return await self._answer("index", "ListTags", list(self.tag_counts))


class Recording(FakeBackends):
    """A fake that keeps the request messages it gets, and answers searches with `hits` and Get with `meta`."""

    def __init__(self, config: GatewayConfig, limits: Limits = FALLBACK) -> None:
        super().__init__(config, limits)
        self.requests: list[object] = []  # Search, SearchSimilar, Upsert and UpdateTags requests, in order
        self.hits = [index_pb2.Hit(id=1, score=1.0)]  # what Search and SearchSimilar answer
        self.meta: index_pb2.ImageMeta | None = None  # what Get answers (None: a bare row of the asked id)

    async def search(self, request: index_pb2.SearchRequest, deadline: Deadline) -> index_pb2.SearchResponse:
        """The hits set on the fake."""
        self.requests.append(request)
        await super().search(request, deadline)  # its bookkeeping, and the failure set for Search
        return index_pb2.SearchResponse(hits=self.hits)

    async def similar(self, request: index_pb2.SearchSimilarRequest,
                      deadline: Deadline) -> index_pb2.SearchResponse:
        """The hits set on the fake."""
        self.requests.append(request)
        await super().similar(request, deadline)
        return index_pb2.SearchResponse(hits=self.hits)

    async def upsert(self, items: list[index_pb2.UpsertItem], deadline: Deadline,
                     collection: str = "") -> index_pb2.UpsertResponse:
        """As the plain fake; the request kept."""
        self.requests.append(index_pb2.UpsertRequest(items=items, collection=collection))
        return await super().upsert(items, deadline, collection)

    async def get(self, image_id: int, deadline: Deadline, collection: str = "") -> index_pb2.ImageMeta:
        """`meta` when set."""
        answer = await super().get(image_id, deadline, collection)
        return self.meta or answer

    async def update_tags(self, request: index_pb2.UpdateTagsRequest,
                          deadline: Deadline) -> index_pb2.UpdateTagsResponse:
        """As the plain fake; the request kept."""
        self.requests.append(request)
        return await super().update_tags(request, deadline)
