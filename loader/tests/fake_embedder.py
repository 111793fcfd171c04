"""A random "model" of any dimension behind the real Embedder contract: vectors from the bytes' hash.

The tiny bundle's model always has 512 dimensions; re-embedding needs a second model of another shape.
`delay_s` per image stands in for inference time, so a run is bound by the embedder as a real one is.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc


def vector_of(data: bytes, dim: int, seed: str) -> np.ndarray:
    """The model's unit vector of an image: deterministic in the bytes, the dimension and the seed."""
    digest = hashlib.sha256(seed.encode() + data).digest()
    v = np.random.default_rng(int.from_bytes(digest[:8], "big")).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEmbedder(embedder_pb2_grpc.EmbedderServicer):
    """EmbedImages and GetModelInfo of a random model; one batch at a time, as one accelerator would."""

    def __init__(self, model_id: str, dim: int, delay_s: float = 0.0) -> None:
        self.model_id, self.dim, self.delay_s = model_id, dim, delay_s
        self.embedded = 0
        self._busy = threading.Lock()

    def GetModelInfo(self, request: Any, context: Any) -> embedder_pb2.ModelInfo:
        """The model's name, dimension and limits."""
        name, _, version = self.model_id.partition("@")
        return embedder_pb2.ModelInfo(name=name, version=version, model_id=self.model_id, dim=self.dim,
                                      max_images_per_request=256, source="random:fake", semantic=False)

    def EmbedImages(self, request: embedder_pb2.EmbedImagesRequest, context: Any) -> embedder_pb2.EmbedImagesResponse:
        """A vector per image, after `delay_s` per image of pretend inference."""
        with self._busy:
            time.sleep(self.delay_s * len(request.images))
            self.embedded += len(request.images)
        return embedder_pb2.EmbedImagesResponse(model_id=self.model_id, request_id=request.request_id, results=[
            embedder_pb2.ImageEmbedding(key=i.key, embedding=vector_of(i.data, self.dim, self.model_id).tolist(),
                                        width=8, height=8, content_type="image/png") for i in request.images])


def serve(fake: FakeEmbedder) -> tuple[grpc.Server, str]:
    """The fake on a free loopback port; returns the server and its address."""
    server = grpc.server(futures.ThreadPoolExecutor(8))
    embedder_pb2_grpc.add_EmbedderServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"
