"""The loader's calls through the shared channels: stopping the run when retries give up, and the pre-flight check."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc
from semsearch_common.channels import RETRYABLE, Backoff, GaveUp, channel, describe, retry
from semsearch_common.enums import enum_word
from semsearch_common.facts import UNKNOWN_MODEL

__all__ = ["RETRYABLE", "Backoff", "LoadError", "Model", "call", "channel", "describe", "images_per_request",
           "preflight"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# What embedders that predate ModelInfo's limit field accept per request (EMBEDDER_MAX_IMAGES_PER_REQUEST's
# default). TODO: drop once every embedder answers ModelInfo.max_images_per_request (issue 10's proto change).
FALLBACK_IMAGES_PER_REQUEST = 256


class LoadError(RuntimeError):
    """The run cannot go on (a service gone for too long, a model mismatch); the message says why."""


def call(fn: Callable[[], T], what: str, backoff: Backoff) -> T:
    """Run a repeatable call with the shared retries; giving up or any other failure stops the run."""
    try:
        return retry(fn, what, backoff)
    except GaveUp as err:
        raise LoadError(str(err)) from None
    except grpc.RpcError as err:
        raise LoadError(f"{what}: {describe(err)}") from None


@dataclass(frozen=True)
class Model:
    """The model the embedder serves, as every vector of this run will record it."""

    model_id: str
    dim: int


def images_per_request(info: embedder_pb2.ModelInfo) -> int:
    """The most images the embedder takes in one request, as it publishes it (0: an older embedder's default)."""
    return info.max_images_per_request or FALLBACK_IMAGES_PER_REQUEST


def preflight(embedder: embedder_pb2_grpc.EmbedderStub, index: index_pb2_grpc.IndexStub, timeout_s: float,
              backoff: Backoff, batch_size: int = 0, collection: str = "") -> Model:
    """Wait for both services, then refuse to start when the index holds another model or dimension,
    or when batches would be larger than the embedder takes."""
    info = call(lambda: embedder.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=timeout_s),
                "embedder GetModelInfo", backoff)
    stats = call(lambda: index.Stats(index_pb2.StatsRequest(collection=collection), timeout=timeout_s),
                 "index Stats", backoff)
    if batch_size > (limit := images_per_request(info)):
        raise LoadError(f"--batch-size {batch_size} is more than the embedder takes in one request ({limit})")
    if stats.dim and stats.dim != info.dim:
        raise LoadError(f"the index stores {stats.dim}-dimensional vectors but the embedder's model "
                        f"{info.model_id} makes {info.dim}-dimensional ones: point the loader at a matching "
                        "index (INDEX_DIM) or embedder")
    # Adopted prototype rows carry no model; the index itself decides whether they may be mixed.
    others = [m for m in stats.model_ids if m not in (info.model_id, UNKNOWN_MODEL)]
    if others:
        raise LoadError(f"the index holds vectors of {', '.join(others)} but the embedder serves "
                        f"{info.model_id}; one collection holds one model")
    if not info.semantic:
        log.warning("the embedder's model %s has random weights (%s): its vectors carry no meaning",
                    info.model_id, info.source)
    log.info("embedder %s (dim %d, %s); index: %d images, backend %s", info.model_id, info.dim,
             ",".join(info.providers), stats.count, enum_word(index_pb2.Backend, stats.backend))
    return Model(info.model_id, info.dim)
