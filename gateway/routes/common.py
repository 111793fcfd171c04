"""What the routers share: the backends and token dependencies, path parameters, error responses, text checks."""

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway import schemas
from gateway.clients import Api
from gateway.config import GatewayConfig
from gateway.errors import ApiError

# FastAPI's `responses=`: documented error statuses (keyed by int or str) and their bodies.
Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {code: {"model": schemas.ErrorBody} for code in (400, 404, 409, 413, 415, 429, 503, 504)}
ImageId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="image id")]
# The index's collection name rule (a lower-case letter, then up to 39 of [a-z0-9_]); empty = alias "default".
COLLECTION_PATTERN = r"^([a-z][a-z0-9_]{0,39})?$"
COLLECTION_HELP = "collection or alias to use; empty = the alias 'default'"
Collection = Annotated[str, Query(pattern=COLLECTION_PATTERN, max_length=40, description=COLLECTION_HELP)]
CollectionForm = Annotated[str, Form(pattern=COLLECTION_PATTERN, max_length=40, description=COLLECTION_HELP)]
bearer = HTTPBearer(auto_error=False, description="GATEWAY_TOKEN, when the gateway has one")


def image_urls(image_id: int, collection: str) -> dict[str, str]:
    """Where the page fetches an image's thumbnail and original (in the collection it was found in)."""
    query = f"?collection={collection}" if collection else ""  # the name rule keeps it URL-safe as is
    return {"thumbnail_url": f"/images/{image_id}/thumb{query}", "image_url": f"/images/{image_id}{query}"}


def backends(request: Request) -> Api:
    """The gRPC clients the lifespan opened."""
    api: Api = request.app.state.backends  # Starlette's State holds anything
    return api


Backend = Annotated[Api, Depends(backends)]


def token_checker(config: GatewayConfig) -> Callable[..., Awaitable[None]]:
    """A dependency that refuses a request without the gateway's bearer token, when it has one."""

    async def require_token(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if not config.token:
            return
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), config.token.encode()):
            raise ApiError(401, "this endpoint needs the gateway's bearer token")

    return require_token


def check_text(name: str, value: str, limit: int, too_long: int = 400) -> None:
    """Refuse text over limit characters (too_long is the status) or with control characters."""
    if len(value) > limit:
        raise ApiError(too_long, f"{name} is {len(value)} characters; at most {limit}")
    # Postgres text cannot hold NUL, and control characters are never meant: refuse them here.
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise ApiError(400, f"{name} contains control characters")
