"""Tag routes: list a collection's tags with their counts, and add or remove tags of several images at once."""

import re

from fastapi import APIRouter, Depends

from gateway import schemas, tagrules
from gateway.clients import Deadline
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.routes.common import COLLECTION_PATTERN, ERRORS, Backend, Collection, Responses, token_checker
from protos.semsearch.v1 import index_pb2

MAX_IDS = 1000  # within the index's max_ids_per_request (10 x its batch size)
# An index older than the tag RPCs answers UNIMPLEMENTED: 501, not a 500 (a rolling upgrade's moment).
TAG_ERRORS: Responses = {**ERRORS, 501: {"model": schemas.ErrorBody, "description": "the index has no tag RPCs yet"}}


def router(config: GatewayConfig) -> APIRouter:
    """The tag routes, with the token of config."""
    routes = APIRouter(tags=["tags"])
    require_token = token_checker(config)

    @routes.get("/api/tags", response_model=list[schemas.TagCount], responses=TAG_ERRORS)
    async def list_tags(b: Backend, collection: Collection = "") -> list[schemas.TagCount]:
        """Every tag of a collection with its number of images, by name."""
        rows = await b.tags(Deadline(config.search_deadline_s), collection)
        return [schemas.TagCount(tag=r.tag, count=r.count) for r in rows]

    @routes.post("/api/tags", response_model=schemas.TagEditResult, dependencies=[Depends(require_token)],
                 responses={401: {"model": schemas.ErrorBody}, **TAG_ERRORS})
    async def edit_tags(b: Backend, edit: schemas.TagEdit) -> schemas.TagEditResult:
        """Add and remove tags of several images (a tag both added and removed is refused)."""
        if not edit.ids:
            raise ApiError(400, "ids: name at least one image")
        if len(edit.ids) > MAX_IDS:
            raise ApiError(400, f"ids: {len(edit.ids)} ids; at most {MAX_IDS} per request")
        if not re.fullmatch(COLLECTION_PATTERN, edit.collection):
            raise ApiError(400, "collection: a lower-case letter, then up to 39 of a-z, 0-9 and _")
        add, remove = tagrules.clean("add", edit.add), tagrules.clean("remove", edit.remove)
        if not add and not remove:
            raise ApiError(400, "add, remove: give at least one tag to add or to remove")
        if both := sorted(set(add) & set(remove)):
            raise ApiError(400, f"add, remove: {both[0]!r} is both added and removed")
        ids = sorted(set(edit.ids))
        reply = await b.update_tags(index_pb2.UpdateTagsRequest(ids=ids, add=add, remove=remove,
                                                                collection=edit.collection),
                                    Deadline(config.search_deadline_s))
        updated = sorted(reply.updated)
        if not updated:
            raise ApiError(404, f"no image with id {ids[0]}" if len(ids) == 1 else "none of these images exists")
        return schemas.TagEditResult(updated=updated, missing=sorted(set(ids) - set(updated)))

    return routes
