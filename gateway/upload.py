"""Adding pictures: check each file, embed the good ones in one call, store them in one call."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway import images
from gateway.clients import Api, Deadline
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.limits import Limits
from gateway.schemas import UploadOutcome
from protos.semsearch.v1 import index_pb2

# Item errors carry a gRPC code number; these are the ones an upload can meet.
ITEM_HTTP = {3: 400, 5: 404, 8: 413, 9: 409, 14: 503, 4: 504}
# What an Upsert item carries beside its original: a thumbnail (a JPEG of at most 1024 px, ~100-300 KB
# at the largest), the vector (a few KB) and its texts. A batch's originals plus this per file must fit
# in the services' message limit; a single file over it still goes alone (and may fail alone: 413).
ITEM_OVERHEAD = 512 * 1024
ENVELOPE = 64 * 1024


@dataclass
class Upload:
    """One received file."""

    name: str
    data: bytes
    content_type: str = ""
    mtime_ns: int = 0  # the file's modification time as the client sent it (0 = unknown)


async def add(uploads: list[Upload], label: str, source: str, backends: Api, config: GatewayConfig,
              deadline: Deadline, collection: str = "", tags: list[str] | None = None) -> list[UploadOutcome]:
    """Store the files; every file gets an outcome, in order, and one bad file fails alone."""
    outcomes: list[UploadOutcome | None] = [None] * len(uploads)
    pending: list[int] = []
    for i, up in enumerate(uploads):
        try:
            up.content_type = images.check(up.data, up.name, config.max_file_bytes, config.max_pixels)
            pending.append(i)
        except ApiError as err:
            outcomes[i] = _failed(up.name, err.status, err.message)
    if pending:
        limits = await backends.limits(deadline)
        for batch in _batches(pending, uploads, limits):
            await _embed_and_store(batch, uploads, outcomes, label, source, backends, config, deadline, collection,
                                   tags or [])
    return [o for o in outcomes if o is not None]


async def _embed_and_store(batch: list[int], uploads: list[Upload], outcomes: list[UploadOutcome | None],
                           label: str, source: str, backends: Api, config: GatewayConfig,
                           deadline: Deadline, collection: str, tags: list[str]) -> None:
    embedded = await backends.embed_images([(str(i), uploads[i].data) for i in batch], config.thumbnail_size,
                                           deadline)
    items: list[tuple[int, index_pb2.UpsertItem]] = []
    for i, result in zip(batch, embedded.results, strict=True):
        up = uploads[i]
        if result.HasField("error"):
            outcomes[i] = _failed(up.name, ITEM_HTTP.get(result.error.code, 400), f"{up.name}: {result.error.message}")
            continue
        items.append((i, index_pb2.UpsertItem(
            sha256=hashlib.sha256(up.data).hexdigest(), original=up.data,
            content_type=result.content_type or up.content_type, thumbnail=result.thumbnail,
            width=result.width, height=result.height, label=label, source=source,
            file_name=_safe_name(up.name), embedding=result.embedding, model_id=embedded.model_id,
            tags=tags, facts=result.facts, file_mtime_ns=up.mtime_ns)))
    if items:
        await _store(items, uploads, outcomes, backends, deadline, collection)


def _batches(pending: list[int], uploads: list[Upload], limits: Limits) -> list[list[int]]:
    """Split the files so that no call passes the services' published limits (images and bytes per request)."""
    budget = limits.max_message_bytes - ENVELOPE
    batches: list[list[int]] = []
    size = 0
    for i in pending:
        n = len(uploads[i].data) + ITEM_OVERHEAD
        if not batches or size + n > budget or len(batches[-1]) >= limits.max_images:
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += n
    return batches


async def _store(items: list[tuple[int, index_pb2.UpsertItem]], uploads: list[Upload],
                 outcomes: list[UploadOutcome | None], backends: Api, deadline: Deadline, collection: str) -> None:
    try:
        stored = await backends.upsert([item for _, item in items], deadline, collection)
    except ApiError as err:
        if err.status not in (409, 507):
            raise
        # The whole batch was refused (the model guard, or a full or read-only media store): say so on
        # each file, not as a crash.
        for i, _ in items:
            outcomes[i] = _failed(uploads[i].name, err.status, err.message)
        return
    for (i, item), result in zip(items, stored.results, strict=True):
        name = uploads[i].name
        if result.HasField("error"):
            outcomes[i] = _failed(name, ITEM_HTTP.get(result.error.code, 400), f"{name}: {result.error.message}")
        else:
            outcomes[i] = UploadOutcome(file=name, outcome="created" if result.created else "exists", id=result.id,
                                        sha256=item.sha256, status=201 if result.created else 200)


def overall_status(outcomes: list[UploadOutcome]) -> int:
    """201 when something was added, 200 when all were present already, else the first file's error."""
    if any(o.outcome == "created" for o in outcomes):
        return 201
    if any(o.outcome == "exists" for o in outcomes):
        return 200
    return outcomes[0].status if outcomes else 400


def _failed(name: str, status: int, message: str) -> UploadOutcome:
    return UploadOutcome(file=name, outcome="error", status=status, message=message)


def _safe_name(name: str) -> str:
    # Only the base name, for display: the index never uses it as a path, but it need not see ours.
    return name.replace("\\", "/").rsplit("/", 1)[-1][:255]

