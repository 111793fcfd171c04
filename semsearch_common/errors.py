"""Domain exceptions that carry their gRPC status and a machine-readable reason, without importing grpc.

Domain code raises these (or subclasses named for the domain); only the transport turns them into a
`google.rpc.Status` whose `ErrorInfo.reason` any client, in any language, can branch on.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar

# ErrorInfo.domain of every error the project's services return.
DOMAIN = "semsearch"


class Reason(StrEnum):
    """Every ErrorInfo reason the services return (UPPER_SNAKE_CASE, stable: clients branch on them)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    TOO_LARGE = "TOO_LARGE"
    OVERLOADED = "OVERLOADED"
    MODEL_MISMATCH = "MODEL_MISMATCH"
    DIMENSION_MISMATCH = "DIMENSION_MISMATCH"
    MEDIA_STORE_FULL = "MEDIA_STORE_FULL"
    MEDIA_STORE_READ_ONLY = "MEDIA_STORE_READ_ONLY"
    MODEL_LOADING = "MODEL_LOADING"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"
    # Collections (index): a name already taken, a collection an alias still uses, an alias moved meanwhile.
    NAME_TAKEN = "NAME_TAKEN"
    COLLECTION_IN_USE = "COLLECTION_IN_USE"
    ALIAS_CHANGED = "ALIAS_CHANGED"
    # Index: an exact search of a collection larger than INDEX_EXACT_MAX_ROWS.
    EXACT_SEARCH_TOO_LARGE = "EXACT_SEARCH_TOO_LARGE"


class ServiceError(Exception):
    """A failure a caller should hear about: `code` is a grpc.StatusCode name, `reason` an ErrorInfo reason."""

    code: ClassVar[str] = "INTERNAL"
    reason: ClassVar[Reason] = Reason.INTERNAL

    def __init__(self, message: str, reason: Reason | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason  # type: ignore[misc]  # an instance may be more precise than its class
        self.metadata = dict(metadata or {})


class InvalidArgument(ServiceError):
    """The request itself is wrong; repeating it cannot help."""

    code = "INVALID_ARGUMENT"
    reason = Reason.INVALID_ARGUMENT


class NotFound(ServiceError):
    """What the request names does not exist."""

    code = "NOT_FOUND"
    reason = Reason.NOT_FOUND


class FailedPrecondition(ServiceError):
    """The request is well formed but the system is not in a state to do it (e.g. another model)."""

    code = "FAILED_PRECONDITION"
    reason = Reason.MODEL_MISMATCH


class ResourceExhausted(ServiceError):
    """Too large, or too much at once; a smaller or later request may succeed."""

    code = "RESOURCE_EXHAUSTED"
    reason = Reason.TOO_LARGE


class Unavailable(ServiceError):
    """A dependency is away or the service is not ready; retrying later is right."""

    code = "UNAVAILABLE"
    reason = Reason.DATABASE_UNAVAILABLE


class DeadlineExceeded(ServiceError):
    """The caller's time ran out before the work was done."""

    code = "DEADLINE_EXCEEDED"
    reason = Reason.DEADLINE_EXCEEDED
