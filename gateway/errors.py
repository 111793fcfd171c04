"""The one error type routes raise, and how gRPC statuses become HTTP statuses."""

from __future__ import annotations

import grpc

# Codes a client can cause or a backend outage can cause; anything else is a bug (500, logged).
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
}
TITLES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
    413: "too_large", 415: "unsupported_media_type", 429: "overloaded", 500: "internal", 503: "unavailable",
    504: "deadline_exceeded", 507: "insufficient_storage",
}
STORAGE_ERROR_KEY = "semsearch-error"  # trailing metadata the index sets on media-store failures


class ApiError(Exception):
    """An HTTP error with a user-readable message; `retry_after` adds a Retry-After header."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after

    def body(self) -> dict[str, object]:
        """The JSON body every error response carries."""
        return {"error": TITLES.get(self.status, "error"), "status": self.status, "message": self.message}


def from_rpc(err: grpc.RpcError, backend: str, retry_after: int, overload_is_429: bool = False) -> ApiError:
    """Translate a failed call to `backend` ("embedder" or "index") into an ApiError.

    RESOURCE_EXHAUSTED means "too large" when the request itself is over a limit, and "busy" when a
    queue is full. The gateway checks sizes before calling the embedder, so from there it means busy:
    callers pass overload_is_429 and the client gets 429 with Retry-After instead of 413.
    """
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or ""
    if _storage_error(err):
        # The index's media store is full or read-only: no retry helps until an operator acts.
        return ApiError(507, f"the {backend} cannot store files: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and overload_is_429:
        return ApiError(429, f"the {backend} is busy: {details}", retry_after)
    status = HTTP_OF_GRPC.get(code, 500)
    if status == 503:
        return ApiError(503, f"the {backend} service is unavailable; try again shortly", retry_after)
    if status == 504:
        return ApiError(504, f"the {backend} service did not answer in time")
    if status == 500:
        return ApiError(500, f"the {backend} service failed ({code.name})")
    return ApiError(status, details or code.name.lower())


def _storage_error(err: grpc.RpcError) -> bool:
    try:
        trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    except Exception:  # a hand-made RpcError (tests) may not carry call state
        return False
    return any(key == STORAGE_ERROR_KEY and value == "storage" for key, value in trailing or ())
