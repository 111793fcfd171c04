"""From a query (and an optional example image) to one search vector: parts embedded in one batch each, combined."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway import upload
from gateway.clients import Api, Deadline
from gateway.errors import ApiError
from gateway.query import Part, QueryError, combine, parse
from protos.semsearch.v1 import embedder_pb2


class QueryProblem(ApiError):
    """A 400 about one place in the query: the body carries its character offset as `position`."""

    def __init__(self, err: QueryError) -> None:
        super().__init__(400, str(err))
        self.position = err.position

    def body(self) -> dict[str, object]:
        """The usual error body plus the position."""
        return {**super().body(), "position": self.position}


@dataclass(frozen=True)
class QueryVector:
    """The vector to search with, the model that made it, and whether any text was cut to the model's context."""

    vector: list[float]
    model_id: str
    truncated: bool


def parts_of(query: str, image: bool = False) -> list[Part]:
    """The parts of a query, or the 400 that names where it went wrong."""
    try:
        return parse(query, image=image)
    except QueryError as err:
        raise QueryProblem(err) from None


async def query_vector(b: Api, parts: list[Part], image: bytes | None, image_weight: float,
                       deadline: Deadline) -> QueryVector:
    """Embed the parts in one EmbedTexts call (beside one EmbedImages call for the image) and combine them.

    One added part alone is searched with the embedder's vector as it is: a plain phrase (or an image
    alone) gives exactly the vector it always did.
    """
    texts = _embed_texts(b, parts, deadline) if parts else None
    pictures = _embed_image(b, image, deadline) if image is not None else None
    done = await asyncio.gather(*(c for c in (texts, pictures) if c is not None), return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    replies: list[tuple[list[list[float]], str, bool]] = [d for d in done if not isinstance(d, BaseException)]
    vectors = [v for vs, _, _ in replies for v in vs]
    models = {m for _, m, _ in replies}
    if len(models) > 1:  # two replicas mid-rollout answered with different models: the sum would mean nothing
        raise ApiError(503, "the embedder answered with two different models; try again shortly")
    weights = [p.signed_weight for p in parts] + ([image_weight] if image is not None else [])
    truncated = any(t for _, _, t in replies)
    if len(vectors) == 1 and weights[0] > 0:
        return QueryVector(vectors[0], models.pop(), truncated)
    try:
        vector = combine(weights, vectors, [p.position for p in parts] + ([0] if image is not None else []))
    except QueryError as err:
        raise QueryProblem(err) from None
    return QueryVector(vector, models.pop(), truncated)


async def _embed_texts(b: Api, parts: list[Part], deadline: Deadline) -> tuple[list[list[float]], str, bool]:
    reply: embedder_pb2.EmbedTextsResponse = await b.embed_texts([p.text for p in parts], deadline)
    for part, result in zip(parts, reply.results, strict=True):
        if result.HasField("error"):
            raise QueryProblem(QueryError(result.error.message, part.position))
    return [list(r.embedding) for r in reply.results], reply.model_id, any(r.truncated for r in reply.results)


async def _embed_image(b: Api, image: bytes, deadline: Deadline) -> tuple[list[list[float]], str, bool]:
    reply = await b.embed_images([("query", image)], 0, deadline)
    result = reply.results[0]
    if result.HasField("error"):
        raise ApiError(upload.ITEM_HTTP.get(result.error.code, 400), result.error.message)
    return [list(result.embedding)], reply.model_id, False
