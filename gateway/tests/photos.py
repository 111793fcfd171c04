"""Photos with known facts and tags, stored through the services' own gRPC APIs (for real-service tests).

The gateway's upload takes its facts from the embedder's EXIF reading; these helpers store facts directly
through the index's Upsert, so that dates, cameras and places are exactly what a test says.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import grpc

from embedder_service.tests import images
from protos.semsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, index_pb2
from tests.support.stack import Stack


def when(text: str) -> int:
    """Seconds since the epoch of an ISO date-time with an offset."""
    return int(datetime.fromisoformat(text).timestamp())


def store(stack: Stack, data: bytes, tags: list[str] | None = None, facts: common_pb2.PhotoFacts | None = None,
          mtime_ns: int = 0, collection: str = "", file_name: str = "photo.jpg") -> int:
    """Embed `data` with the real embedder and upsert it with these tags and facts; returns its id."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.embedder.port}") as channel:
        embedded = embedder_pb2_grpc.EmbedderStub(channel).EmbedImages(
            embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(key="0", data=data)], thumbnail_size=320),
            timeout=30)
    result = embedded.results[0]
    assert not result.HasField("error"), result.error
    item = index_pb2.UpsertItem(
        sha256=hashlib.sha256(data).hexdigest(), original=data, content_type="image/jpeg",
        thumbnail=result.thumbnail, width=result.width, height=result.height, source="test", file_name=file_name,
        embedding=result.embedding, model_id=embedded.model_id, tags=tags or [], facts=facts, file_mtime_ns=mtime_ns)
    reply = stack.index.stub.Upsert(index_pb2.UpsertRequest(items=[item], collection=collection), timeout=30)
    stored = reply.results[0]
    assert not stored.HasField("error"), stored.error
    return stored.id


def dated(stack: Stack, seed: int, taken: str | None, tags: list[str], camera: str = "",
          place: tuple[float, float] | None = None) -> int:
    """A photo taken at `taken` (ISO with offset; None: undated) by `camera`, at `place`, with these tags."""
    facts = common_pb2.PhotoFacts(camera_make=camera.split(" ", 1)[0] if camera else "",
                                  camera_model=camera.split(" ", 1)[-1] if camera else "")
    if taken:
        facts.taken_at = when(taken)
        offset = datetime.fromisoformat(taken).utcoffset()
        assert offset is not None
        facts.taken_offset_minutes = int(offset.total_seconds() // 60)
    if place:
        facts.latitude, facts.longitude = place
    return store(stack, images.jpeg(160, 120, seed=seed), tags, facts, file_name=f"dated-{seed}.jpg")
