"""The one error type routes raise, and how failed gRPC calls become HTTP statuses."""

from __future__ import annotations

import grpc

from semsearch_common.errors import Reason
from semsearch_common.status import call_reason

# What each ErrorInfo reason means to an HTTP client: the services say why a call failed, so the
# gateway never guesses from a status code (RESOURCE_EXHAUSTED is both "too large" and "busy").
HTTP_OF_REASON = {
    Reason.INVALID_ARGUMENT: 400,
    Reason.NOT_FOUND: 404,
    Reason.MODEL_MISMATCH: 409,
    Reason.DIMENSION_MISMATCH: 409,
    Reason.TOO_LARGE: 413,
    Reason.OVERLOADED: 429,
    Reason.INTERNAL: 500,
    Reason.MODEL_LOADING: 503,
    Reason.DATABASE_UNAVAILABLE: 503,
    Reason.SHUTTING_DOWN: 503,
    Reason.DEADLINE_EXCEEDED: 504,
    Reason.MEDIA_STORE_FULL: 507,
    Reason.MEDIA_STORE_READ_ONLY: 507,
}
# A call without a reason failed before a service answered (no connection, gRPC's own message-size
# check, our deadline): the code is all there is. Anything not listed is a bug (500, logged).
HTTP_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNAUTHENTICATED: 503,  # a backend refusing the gateway is the operator's problem
    grpc.StatusCode.PERMISSION_DENIED: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,  # a backend older than this gateway (e.g. an index without the tag RPCs)
}
TITLES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    409: "conflict", 413: "too_large", 414: "uri_too_long", 415: "unsupported_media_type", 429: "overloaded",
    431: "headers_too_large", 500: "internal", 501: "not_implemented", 503: "unavailable",
    504: "deadline_exceeded", 507: "insufficient_storage",
}


class ApiError(Exception):
    """An HTTP error with a user-readable message; `retry_after` adds a Retry-After header."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after

    def body(self) -> dict[str, object]:
        """The JSON body every error response carries."""
        return {"error": TITLES.get(self.status, "error"), "status": self.status, "message": self.message}


def http_status(reason: str, code: grpc.StatusCode) -> int:
    """The HTTP status of a failure: by its ErrorInfo reason, by its code when it has none we know."""
    if reason in HTTP_OF_REASON:
        return HTTP_OF_REASON[Reason(reason)]
    return HTTP_OF_GRPC.get(code, 500)


def from_rpc(err: grpc.RpcError, backend: str, retry_after: int) -> ApiError:
    """Translate a failed call to `backend` ("embedder" or "index") into an ApiError."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or ""
    status = http_status(call_reason(err), code)
    if status == 429:
        return ApiError(429, f"the {backend} is busy: {details}", retry_after)
    if status == 503:
        return ApiError(503, f"the {backend} service is unavailable; try again shortly", retry_after)
    if status == 504:
        return ApiError(504, f"the {backend} service did not answer in time")
    if status == 507:
        # The index's media store is full or read-only: no retry helps until an operator acts.
        return ApiError(507, f"the {backend} cannot store files: {details}")
    if status == 500:
        return ApiError(500, f"the {backend} service failed ({code.name})")
    if status == 501:
        return ApiError(501, f"the {backend} service does not offer this yet (a version older than the gateway's)")
    return ApiError(status, details or code.name.lower())
