"""Image routes: add, describe and delete pictures, and serve their bytes."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gateway import facts, filetimes, images, schemas, tagrules, upload
from gateway.clients import Api, Deadline
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.routes.common import (
    ERRORS,
    Backend,
    Collection,
    CollectionForm,
    ImageId,
    Responses,
    check_text,
    image_urls,
    token_checker,
)

IMAGE_CACHE = "public, max-age=31536000, immutable"  # an id's bytes never change; a new upload gets a new id


def router(config: GatewayConfig) -> APIRouter:
    """The image routes, with the limits and token of config."""
    routes = APIRouter(tags=["images"])
    require_token = token_checker(config)

    @routes.post("/api/images", response_model=schemas.UploadResult, status_code=201,
              dependencies=[Depends(require_token)],
              responses={**ERRORS, 200: {"model": schemas.UploadResult, "description": "every file was stored already"},
                         401: {"model": schemas.ErrorBody},
                         **{code: {"model": schemas.UploadFailure, "description": "no file was stored"}
                            for code in (400, 409, 413, 415, 507)}})
    async def add_images(b: Backend, files: Annotated[list[UploadFile], File(description="one or more images")],
                         label: Annotated[str, Form(description="label for all the files (kept as a tag too)")] = "",
                         tags: Annotated[list[str], Form(description=(
                             "tags for all the files (repeatable, one tag each; blank ones are skipped); a file "
                             "that is stored already gets the new ones added"))] = [],  # noqa: B006
                         source: Annotated[str, Form(description="where they come from")] = "upload",
                         collection: CollectionForm = "",
                         last_modified: Annotated[list[int], Form(description=(
                             "each file's modification time in milliseconds since the epoch (a browser's "
                             "File.lastModified), one per file in the order of `files`, or none; 0 = unknown. "
                             "Kept as the image's file_modified_at, never as its capture time. Negative values, "
                             "times more than a day ahead, or a count that does not match give 400"))] = [],  # noqa: B006
                         ) -> Response:
        """Add pictures; each file gets its own outcome (created, already present, or its error)."""
        if len(files) > config.max_files:
            raise ApiError(413, f"{len(files)} files; at most {config.max_files} per request")
        times = filetimes.file_times_ns(last_modified, len(files))
        label, source = label.strip(), source.strip() or "upload"
        check_text("label", label, 200)
        check_text("source", source, 200)
        chosen = tagrules.clean("tags", tags, allow_empty=True)
        received = [upload.Upload(f.filename or f"file {i + 1}", await f.read(config.max_file_bytes + 1),
                                  mtime_ns=times[i]) for i, f in enumerate(files)]
        outcomes = await upload.add(received, label, source, b, config, Deadline(config.upload_deadline_s),
                                    collection, chosen)
        body = schemas.UploadResult(results=outcomes, created=sum(o.outcome == "created" for o in outcomes),
                                    existing=sum(o.outcome == "exists" for o in outcomes),
                                    failed=sum(o.outcome == "error" for o in outcomes)).model_dump()
        status = upload.overall_status(outcomes)
        if status >= 400:  # nothing stored: an error body (as everywhere) that still lists each file
            body.update(ApiError(status, outcomes[0].message or "no file was stored").body())
        return JSONResponse(body, status_code=status)

    @routes.get("/api/images/{image_id}", response_model=schemas.ImageInfo, responses=ERRORS)
    async def image_info(b: Backend, image_id: ImageId, collection: Collection = "") -> schemas.ImageInfo:
        """Metadata of one image."""
        m = await b.get(image_id, Deadline(config.search_deadline_s), collection)
        return schemas.ImageInfo(
            id=m.id, sha256=m.sha256, label=m.label, source=m.source, file_name=m.file_name, width=m.width,
            height=m.height, content_type=m.content_type, size_bytes=m.size_bytes, model_id=m.model_id,
            created_at=m.created_at, **image_urls(m.id, collection), tags=list(m.tags), facts=facts.of_meta(m.facts),
            file_modified_at=facts.mtime_iso(m.file_mtime_ns))

    @routes.delete("/api/images/{image_id}", response_model=schemas.Deleted,
                dependencies=[Depends(require_token)], responses={401: {"model": schemas.ErrorBody}, **ERRORS})
    async def delete_image(b: Backend, image_id: ImageId, collection: Collection = "") -> schemas.Deleted:
        """Remove an image, its vector and its files."""
        if not await b.delete(image_id, Deadline(config.search_deadline_s), collection):
            raise ApiError(404, f"no image with id {image_id}")
        return schemas.Deleted(deleted=image_id)

    async def serve_image(b: Api, request: Request, image_id: int, variant: str, collection: str) -> Response:
        # The index must start within the download deadline (a hung index is a quick 504); the bytes then
        # have the upload's budget, so a big original still reaches a slow client whole.
        try:
            first, body = await asyncio.wait_for(
                b.open_image(image_id, variant, Deadline(config.upload_deadline_s), collection),
                config.download_deadline_s)
        except TimeoutError:
            raise ApiError(504, "the index service did not answer in time") from None
        suffix = f"-{variant}" if variant else ""
        etag = f'"{first.sha256}{suffix}"'
        headers = {"ETag": etag, "Cache-Control": IMAGE_CACHE}
        if etag in request.headers.get("if-none-match", ""):
            await body.aclose()
            return Response(status_code=304, headers=headers)
        headers["Content-Length"] = str(first.total_size)
        # Only the image types we decode go out as such: anything else another index client stored (HTML,
        # SVG, a header-breaking string) is served as opaque bytes, so no browser runs it as a page.
        media_type = first.content_type if first.content_type in images.SERVED_TYPES else "application/octet-stream"
        ext = media_type.rsplit("/", 1)[-1] if media_type in images.SERVED_TYPES else "bin"
        headers["Content-Disposition"] = f'inline; filename="{image_id}{suffix}.{ext}"'
        if request.method == "HEAD":  # the headers of GET, without pulling the bytes from the index
            await body.aclose()
            return Response(status_code=200, headers=headers, media_type=media_type)
        return StreamingResponse(body, media_type=media_type, headers=headers)

    image_responses: Responses = {200: {"content": {"image/*": {}}, "description": "the image bytes"}, 304: {},
                                  **ERRORS}

    @routes.get("/images/{image_id}", response_class=Response, responses=image_responses)
    async def original(b: Backend, request: Request, image_id: ImageId, collection: Collection = "") -> Response:
        """The original file, as uploaded."""
        return await serve_image(b, request, image_id, "", collection)

    @routes.get("/images/{image_id}/thumb", response_class=Response, responses=image_responses)
    async def thumbnail(b: Backend, request: Request, image_id: ImageId, collection: Collection = "") -> Response:
        """A small JPEG of the image."""
        return await serve_image(b, request, image_id, "thumb", collection)

    @routes.get("/images/{image_id}/display", response_class=Response, responses=image_responses)
    @routes.head("/images/{image_id}/display", response_class=Response, responses=image_responses)
    async def display(b: Backend, request: Request, image_id: ImageId, collection: Collection = "") -> Response:
        """A JPEG of about 1600 px on the long side for viewing, made once by the index and kept (EXIF
        orientation applied); the original itself when it is that small already and a type browsers show."""
        return await serve_image(b, request, image_id, "display", collection)

    return routes
