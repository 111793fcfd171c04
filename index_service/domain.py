"""Domain types, errors and input validation of the index service (no grpc, no SQL)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from index_service.photos import Facts, Filter, Order
from semsearch_common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from semsearch_common.facts import UNKNOWN_MODEL

__all__ = ["UNKNOWN_MODEL", "DeadlineExceeded", "InvalidArgument", "NotFound", "ServiceError", "Unavailable"]

SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")  # \Z: "$" would also accept a trailing newline


class Mismatch(FailedPrecondition):
    """Another model or dimension than the collection's (FAILED_PRECONDITION, MODEL_MISMATCH by default)."""


class TooLarge(ResourceExhausted):
    """Over a size limit (RESOURCE_EXHAUSTED, TOO_LARGE)."""


class StorageError(ServiceError):
    """The media store cannot take a file: an operator must act, so the transport logs these loudly."""


class StorageFull(StorageError, ResourceExhausted):
    """The media store's disk or quota is full (RESOURCE_EXHAUSTED, MEDIA_STORE_FULL)."""

    reason = Reason.MEDIA_STORE_FULL


class StorageUnwritable(StorageError, FailedPrecondition):
    """The media store is read-only or not writable by the service (FAILED_PRECONDITION, MEDIA_STORE_READ_ONLY)."""

    reason = Reason.MEDIA_STORE_READ_ONLY


@dataclass(frozen=True)
class NewImage:
    """A validated upsert item, ready for the repository."""

    sha256: str
    original: bytes
    content_type: str
    thumbnail: bytes
    width: int
    height: int
    label: str
    source: str
    file_name: str
    vector: np.ndarray
    model_id: str
    file_mtime_ns: int = 0
    record_file: bool = False  # a folder sync's item: record (source, file_name) as a file of the collection
    tags: tuple[str, ...] = ()  # cleaned and sorted, the label included
    facts: Facts = field(default_factory=Facts)


@dataclass(frozen=True)
class UpsertOutcome:
    """The result of one item: its row id and whether the row is new, or an error."""

    sha256: str
    id: int = 0
    created: bool = False
    error: ServiceError | None = None


@dataclass(frozen=True)
class SearchQuery:
    """A nearest-neighbour query."""

    vector: np.ndarray
    k: int
    labels: tuple[str, ...] = ()
    source: str = ""
    min_score: float | None = None
    exact: bool = False
    exclude_id: int | None = None
    model_id: str = ""  # when set, the collection must hold this model
    photo: Filter = field(default_factory=Filter)
    order: Order = field(default_factory=Order)

    @property
    def filtered(self) -> bool:
        """Whether a WHERE clause narrows the candidates."""
        return bool(self.labels or self.source or self.photo.active)


@dataclass(frozen=True)
class Hit:
    """One search result; score is cosine similarity."""

    id: int
    score: float
    label: str
    source: str
    width: int
    height: int
    tags: tuple[str, ...] = ()
    taken_at: int | None = None
    below_cutoff: bool = False
    taken_offset_minutes: int | None = None  # of taken_at from UTC, when the file states it


@dataclass(frozen=True)
class ImageMeta:
    """Stored metadata of one image."""

    id: int
    sha256: str
    label: str
    source: str
    file_name: str
    width: int
    height: int
    content_type: str
    size_bytes: int
    model_id: str
    created_at: int
    original_ref: str
    tags: tuple[str, ...] = ()
    facts: Facts = field(default_factory=Facts)
    file_mtime_ns: int = 0


def check_vector(values: Any, dim: int, tolerance: float) -> np.ndarray:
    """A float32 copy of `values` if it has `dim` finite entries of unit norm; raises otherwise."""
    vec = np.asarray(values, dtype=np.float32)
    if vec.ndim != 1 or vec.shape[0] == 0:
        raise InvalidArgument("vector is empty")
    if vec.shape[0] != dim:
        raise Mismatch(f"vector has {vec.shape[0]} dimensions, the collection has {dim}",
                       reason=Reason.DIMENSION_MISMATCH)
    if not np.isfinite(vec).all():
        raise InvalidArgument("vector has non-finite values (NaN or Inf)")
    norm = float(np.linalg.norm(vec.astype(np.float64)))
    if abs(norm - 1.0) > tolerance:
        raise InvalidArgument(f"vector is not L2-normalized (norm {norm:.6f})")
    return vec


def check_sha256(sha: str, data: bytes) -> None:
    """Raise unless `sha` is lower-case hex and the sha256 of `data`."""
    if not SHA256_RE.match(sha):
        raise InvalidArgument("sha256 must be 64 lower-case hex characters")
    if hashlib.sha256(data).hexdigest() != sha:
        raise InvalidArgument("sha256 does not match the original's bytes")


MAX_DIMENSION = 2**31 - 1  # width and height are Postgres integers
CONTENT_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*/[A-Za-z0-9][A-Za-z0-9.+-]*\Z")


def check_text(name: str, value: str, limit: int) -> None:
    """Raise unless `value` fits in `limit` characters and holds no NUL (Postgres text cannot store it)."""
    if len(value) > limit:
        raise InvalidArgument(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise InvalidArgument(f"{name} contains a NUL character")


def check_image_fields(content_type: str, width: int, height: int) -> None:
    """Raise unless the content type is a bare `type/subtype` (or empty) and the sizes fit the table."""
    if content_type and not CONTENT_TYPE_RE.match(content_type):
        raise InvalidArgument("content_type must be a bare type/subtype such as image/jpeg")
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise InvalidArgument(f"width and height must not exceed {MAX_DIMENSION}")


def check_model_id(model_id: str) -> None:
    """Raise unless a model id is given."""
    if not model_id.strip():
        raise InvalidArgument("model_id is missing")
    check_text("model_id", model_id, 200)


def sniff_content_type(data: bytes) -> str:
    """The image type of a thumbnail from its magic bytes."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"
