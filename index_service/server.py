"""The gRPC servicer of semsearch.v1.Index: proto <-> domain, domain errors -> status codes."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from index_service import catalog, domain, duplicates, photo_pb
from index_service.catalog import CollInfo
from index_service.config import Config
from index_service.domain import (
    InvalidArgument,
    Mismatch,
    NotFound,
    SearchQuery,
    ServiceError,
    StorageError,
    TooLarge,
    Unavailable,
    UpsertOutcome,
)
from index_service.files_server import FilesServicer, check_path, check_source
from index_service.media import MediaStore
from index_service.metrics import UPSERTED
from index_service.ports import Serving
from index_service.renditions import Renditions
from index_service.repository import Repository
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common import status
from semsearch_common.enums import enum_value
from semsearch_common.server import Server, ServerSettings
from semsearch_common.server import create_server as create_grpc_server

if TYPE_CHECKING:
    from index_service.adopt import Adopter
    from index_service.background import Background
    from index_service.monitor import DbMonitor
    from index_service.pg import EmbeddedPostgres
    from index_service.recall import RecallKeeper
    from index_service.thumbnail_mover import ThumbnailMover

log = logging.getLogger(__name__)

SERVICE_NAME = index_pb2.DESCRIPTOR.services_by_name["Index"].full_name
MAX_THUMBNAIL = 4 * 1024 * 1024
MAX_TEXT = 1000
MAX_DIM = 2000  # what both backends index


@dataclass
class Deps:
    """What the servicer needs: the repository, the media store, the database monitor (and the embedded cluster)."""

    repo: Repository
    media: MediaStore
    monitor: DbMonitor | None = None
    background: Background | None = None  # the media sweep and deferred index builds
    keeper: RecallKeeper | None = None  # measures recall and widens the search breadth (serve starts it)
    postgres: EmbeddedPostgres | None = None  # set when the service runs its own cluster: the monitor revives it
    adopter: Adopter | None = None  # makes the prototype's adopted rows whole in the background
    mover: ThumbnailMover | None = None  # moves old rows' thumbnails into the media store in the background
    renditions: Renditions = field(init=False)

    def __post_init__(self) -> None:
        self.renditions = Renditions(self.media)

    @classmethod
    def build(cls, config: Config, dsn: str, postgres: EmbeddedPostgres | None = None) -> Deps:
        """Wire the real dependencies for a database DSN (and the embedded cluster serving it, if any)."""
        media = MediaStore(config.media_dir)
        return cls(Repository(config, dsn, media), media, postgres=postgres)

    def close(self) -> None:
        """Stop the monitor and close database connections."""
        if self.monitor is not None:
            self.monitor.stop()
        if self.background is not None:
            self.background.stop()
        if self.adopter is not None:
            self.adopter.stop()
        if self.mover is not None:
            self.mover.stop()
        if self.keeper is not None:
            self.keeper.stop()
        self.repo.close()

    def failed(self, err: ServiceError) -> None:
        """Every RPC's domain error passes here: a lost database wakes the monitor, storage trouble is loud."""
        if isinstance(err, Unavailable) and self.monitor is not None:
            self.monitor.lost()
        if isinstance(err, StorageError):
            log.error("media store: %s", err)  # an operator must act


def _timeout(context: grpc.ServicerContext) -> float:
    """Seconds left for the call (the platform bounds calls without a client deadline)."""
    remaining = context.time_remaining()
    return 0.0 if remaining is None else max(0.0, remaining)


class IndexServicer(FilesServicer, index_pb2_grpc.IndexServicer):
    """semsearch.v1.Index over a Repository."""

    def __init__(self, config: Config, deps: Serving) -> None:
        self.config, self.deps, self.repo = config, deps, deps.repo

    def _ready(self) -> None:
        if not self.repo.ready:
            raise Unavailable("the index database is not reachable or not migrated yet")

    def Upsert(self, request: index_pb2.UpsertRequest, context: grpc.ServicerContext) -> index_pb2.UpsertResponse:
        """Validate each item alone, store the valid ones in one transaction."""
        self._ready()
        if not request.items:
            raise InvalidArgument("no items")
        if len(request.items) > self.config.max_batch:
            raise TooLarge(f"{len(request.items)} items; at most {self.config.max_batch} per batch")
        timeout = _timeout(context)
        dim = self.repo.collection(request.collection, timeout).dim
        outcomes: list[UpsertOutcome | None] = []
        valid: list[domain.NewImage] = []
        for item in request.items:
            try:
                valid.append(self._new_image(item, dim))
                outcomes.append(None)
            except ServiceError as err:
                outcomes.append(UpsertOutcome(item.sha256, error=err))
        stored = iter(self.repo.upsert(valid, _timeout(context), request.collection, request.expected_rows)
                      if valid else [])
        results = [o if o is not None else next(stored) for o in outcomes]
        errors = [r.error for r in results if r.error is not None]
        if errors and len(errors) == len(results) and all(isinstance(e, Mismatch) for e in errors):
            raise errors[0]  # nothing stored because of the model guard: the whole call fails
        for r in results:
            UPSERTED.labels("error" if r.error else "created" if r.created else "existing").inc()
        log.info("upsert: %d items, %d new, %d errors", len(results), sum(r.created for r in results), len(errors))
        return index_pb2.UpsertResponse(results=[_result_pb(r) for r in results])

    def _new_image(self, item: index_pb2.UpsertItem, dim: int) -> domain.NewImage:
        domain.check_model_id(item.model_id)
        if not item.original:
            raise InvalidArgument("original is empty")
        domain.check_sha256(item.sha256, item.original)
        if len(item.thumbnail) > MAX_THUMBNAIL:
            raise TooLarge(f"thumbnail is {len(item.thumbnail)} bytes; at most {MAX_THUMBNAIL}")
        for name in ("label", "source", "file_name", "content_type"):
            domain.check_text(name, getattr(item, name), MAX_TEXT)
        domain.check_image_fields(item.content_type, item.width, item.height)
        vector = domain.check_vector(item.embedding, dim, self.config.norm_tolerance)
        if item.record_file:
            check_source(item.source)
            check_path(item.file_name)
        return domain.NewImage(
            sha256=item.sha256, original=item.original,
            content_type=item.content_type or "application/octet-stream", thumbnail=item.thumbnail,
            width=item.width, height=item.height, label=item.label.strip(), source=item.source,
            file_name=item.file_name, vector=vector, model_id=item.model_id,
            file_mtime_ns=item.file_mtime_ns, record_file=item.record_file,
            tags=photo_pb.item_tags(item), facts=photo_pb.facts_from_pb(item.facts),
        )

    def Search(self, request: index_pb2.SearchRequest, context: grpc.ServicerContext) -> index_pb2.SearchResponse:
        """Nearest neighbours of a query vector in a collection (its model and dimension checked there)."""
        self._ready()
        # The dimension is the collection's business: checked in the searching transaction.
        vector = domain.check_vector(request.vector, len(request.vector), self.config.norm_tolerance)
        query = self._query(vector, request, None, request.model_id)
        hits, ms = self.repo.search(query, _timeout(context), request.collection)
        return _search_pb(hits, ms)

    def SearchSimilar(
        self, request: index_pb2.SearchSimilarRequest, context: grpc.ServicerContext
    ) -> index_pb2.SearchResponse:
        """Nearest neighbours of a stored image, itself excluded."""
        self._ready()
        query = self._query(None, request, request.id, "")
        hits, ms = self.repo.search_similar(request.id, query, _timeout(context), request.collection)
        return _search_pb(hits, ms)

    def _query(self, vector: Any, request: Any, exclude: int | None, model_id: str) -> SearchQuery:
        if not 1 <= request.k <= self.config.max_k:
            raise InvalidArgument(f"k must be between 1 and {self.config.max_k}")
        if len(request.filter.labels) > MAX_TEXT:
            raise InvalidArgument(f"at most {MAX_TEXT} labels in a filter")
        for text in (*request.filter.labels, request.filter.source):
            domain.check_text("filter", text, MAX_TEXT)
        if request.HasField("min_score") and not math.isfinite(request.min_score):
            raise InvalidArgument("min_score must be a finite number")
        return SearchQuery(
            vector=vector, k=request.k, labels=tuple(request.filter.labels), source=request.filter.source,
            min_score=request.min_score if request.HasField("min_score") else None,
            exact=request.exact, exclude_id=exclude, model_id=model_id,
            photo=photo_pb.filter_from_pb(request.filter, MAX_TEXT),
            order=photo_pb.order_from_pb(request, self.config.max_k),
        )

    def Get(self, request: index_pb2.GetRequest, context: grpc.ServicerContext) -> index_pb2.GetResponse:
        """Metadata of the ids that exist."""
        self._ready()
        _check_ids(request.ids, self.config.max_batch * 10)
        metas = self.repo.get(list(request.ids), _timeout(context), request.collection)
        return index_pb2.GetResponse(images=[_meta_pb(m) for m in metas])

    def GetImage(self, request: index_pb2.GetImageRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        """The original, its display rendition or its thumbnail, in chunks: from the media store (a thumbnail
        stored before thumbnails moved there comes from its row)."""
        self._ready()
        timeout = _timeout(context)
        metas = self.repo.get([request.id], timeout, request.collection)
        if not metas:
            raise NotFound(f"no image with id {request.id}")
        meta = metas[0]
        if request.variant == index_pb2.IMAGE_VARIANT_THUMBNAIL:  # UNSPECIFIED (old callers' 0): the original
            data = self.repo.thumbnail(request.id, timeout, request.collection)
            return _chunks(iter([data]), domain.sniff_content_type(data), len(data), meta.sha256)
        if not meta.sha256:
            raise NotFound(f"image {request.id} came from the prototype; its original is not stored "
                           f"(reference: {meta.original_ref})")
        try:
            if request.variant == index_pb2.IMAGE_VARIANT_DISPLAY:
                content_type, size, shown = self.deps.renditions.display(
                    meta.sha256, meta.content_type, meta.width, meta.height)
                return _chunks(shown, content_type, size, meta.sha256)
            size = self.deps.media.size(meta.sha256)
        except FileNotFoundError:
            log.error("image %d: media file %s is missing", request.id, meta.sha256)
            raise NotFound(f"the original of image {request.id} is missing from the media store") from None
        return _chunks(self.deps.media.open(meta.sha256), meta.content_type, size, meta.sha256)

    def Delete(self, request: index_pb2.DeleteRequest, context: grpc.ServicerContext) -> index_pb2.DeleteResponse:
        """Remove rows and their files."""
        self._ready()
        _check_ids(request.ids, self.config.max_batch * 10)
        deleted = self.repo.delete(list(request.ids), _timeout(context), request.collection) if request.ids else []
        log.info("deleted %d image(s)", len(deleted))
        return index_pb2.DeleteResponse(deleted=deleted)

    def ListLabels(
        self, request: index_pb2.ListLabelsRequest, context: grpc.ServicerContext
    ) -> index_pb2.ListLabelsResponse:
        """Every label with its count."""
        self._ready()
        rows = self.repo.labels(_timeout(context), request.collection)
        return index_pb2.ListLabelsResponse(labels=[index_pb2.LabelCount(label=lb, count=n) for lb, n in rows])

    def Exists(self, request: index_pb2.ExistsRequest, context: grpc.ServicerContext) -> index_pb2.ExistsResponse:
        """The stored subset of the given hashes."""
        self._ready()
        if len(request.sha256) > 100_000:
            raise TooLarge("at most 100000 hashes per call")
        # Only well-formed hashes can be stored; the rest are simply absent (and never reach SQL).
        shas = [sha for sha in request.sha256 if domain.SHA256_RE.match(sha)]
        present = self.repo.exists(shas, _timeout(context), request.collection) if shas else []
        return index_pb2.ExistsResponse(present=present)

    def Stats(self, request: index_pb2.StatsRequest, context: grpc.ServicerContext) -> index_pb2.StatsResponse:
        """Count, backend, versions, index parameters and state, models, sizes."""
        self._ready()
        stats, c = self.repo.stats(_timeout(context), request.collection), self.config
        stats["backend"] = enum_value(index_pb2.Backend, stats["backend"])
        stats["index_state"] = enum_value(index_pb2.IndexState, stats["index_state"])
        return index_pb2.StatsResponse(
            **stats, max_k=c.max_k, max_upsert_items=c.max_batch, max_message_bytes=c.max_message_mb * 1024 * 1024,
            max_ids_per_request=c.max_batch * 10, max_thumbnail_bytes=MAX_THUMBNAIL, max_text_chars=MAX_TEXT,
            max_exact_rows=c.exact_max_rows)

    def BuildIndex(
        self, request: index_pb2.BuildIndexRequest, context: grpc.ServicerContext
    ) -> index_pb2.BuildIndexResponse:
        """Build the HNSW index after a bulk load."""
        self._ready()
        built, seconds = self.repo.build_index(request.concurrently, context.time_remaining(),  # None: unbounded
                                               request.collection)
        state = enum_value(index_pb2.IndexState, self.repo.index_state(_timeout(context) or 30.0, request.collection))
        # protoc's .pyi types enum fields as the enum class, though every enum value is a plain int.
        return index_pb2.BuildIndexResponse(index_state=state, build_seconds=seconds, built=built)  # type: ignore[arg-type]

    def ListCollections(
        self, request: index_pb2.ListCollectionsRequest, context: grpc.ServicerContext
    ) -> index_pb2.ListCollectionsResponse:
        """Every collection with its model, dimension, count and aliases."""
        self._ready()
        return index_pb2.ListCollectionsResponse(
            collections=[_collection_pb(i) for i in self.repo.collections(_timeout(context))])

    def CreateCollection(
        self, request: index_pb2.CreateCollectionRequest, context: grpc.ServicerContext
    ) -> index_pb2.CreateCollectionResponse:
        """A new empty collection for one model and dimension, its (empty) HNSW index built unless deferred."""
        self._ready()
        catalog.check_name("collection", request.name)
        domain.check_model_id(request.model_id)
        if not 1 <= request.dim <= MAX_DIM:
            raise InvalidArgument(f"dim must be between 1 and {MAX_DIM}")
        timeout = _timeout(context)
        coll = self.repo.create_collection(request.name, request.model_id, request.dim, timeout, request.vector_type)
        if not self.config.defer_index:
            self.repo.build_index(False, timeout, coll.name)
        log.info("created collection %s (%s, dim %d, %s)", coll.name, coll.model_id, coll.dim, coll.vector_type)
        return index_pb2.CreateCollectionResponse(collection=index_pb2.Collection(
            name=coll.name, model_id=coll.model_id or "", dim=coll.dim, vector_type=coll.vector_type))

    def DropCollection(
        self, request: index_pb2.DropCollectionRequest, context: grpc.ServicerContext
    ) -> index_pb2.DropCollectionResponse:
        """Drop a collection no alias points at."""
        self._ready()
        catalog.check_name("collection", request.name)
        count = self.repo.drop_collection(request.name, _timeout(context))
        log.info("dropped collection %s (%d rows)", request.name, count)
        return index_pb2.DropCollectionResponse(dropped_count=count)

    def SetAlias(self, request: index_pb2.SetAliasRequest, context: grpc.ServicerContext) -> index_pb2.SetAliasResponse:
        """Point an alias at a collection in one transaction."""
        self._ready()
        previous = self.repo.set_alias(request.alias, request.collection, request.expected_collection,
                                       _timeout(context))
        log.info("alias %s: %s -> %s", request.alias, previous or "(new)", request.collection)
        return index_pb2.SetAliasResponse(previous_collection=previous)

    def ListImages(
        self, request: index_pb2.ListImagesRequest, context: grpc.ServicerContext
    ) -> index_pb2.ListImagesResponse:
        """A page of a collection's images by ascending id."""
        self._ready()
        limit = self.config.max_batch * 10
        if not 1 <= request.limit <= limit:
            raise TooLarge(f"limit must be between 1 and {limit}") if request.limit else InvalidArgument(
                "limit must be at least 1")
        metas, thumbnails, scanned = self.repo.page(request.after_id, request.limit, _timeout(context),
                                                    request.collection, request.missing_from,
                                                    with_bytes=request.include_bytes)
        out = index_pb2.ListImagesResponse(last_id=scanned[-1] if scanned else 0)
        if not request.include_bytes:
            out.images.extend(_meta_pb(m) for m in metas)
        budget = self.config.max_message_mb * 1024 * 1024 // 2
        for meta, thumbnail in zip(metas, thumbnails, strict=True) if request.include_bytes else ():
            # The page stops at the first image past the budget: no later original or thumbnail is read.
            original = self._original(meta)
            if out.images and budget < len(original) + len(thumbnail):
                break  # the rest comes with the next page
            budget -= len(original) + len(thumbnail)
            out.images.append(_meta_pb(meta))
            out.originals.append(original)
            out.thumbnails.append(thumbnail)
            out.last_id = meta.id
        out.left_out = sum(1 for i in scanned if i <= out.last_id) - len(out.images)
        return out

    def FindDuplicates(
        self, request: index_pb2.FindDuplicatesRequest, context: grpc.ServicerContext
    ) -> index_pb2.FindDuplicatesResponse:
        """Near-duplicate groups among the next `limit` images, and the scan's progress."""
        self._ready()
        duplicates.check(request.max_distance, request.after_id, request.limit)
        found = self.repo.find_duplicates(request.max_distance, request.after_id, request.limit, _timeout(context),
                                          request.collection)
        groups = [index_pb2.DuplicateGroup(
            members=[index_pb2.DuplicateMember(image=_meta_pb(found.metas[i]), distance=d)
                     for i, d in zip(g.ids, g.distances, strict=True) if i in found.metas],
            truncated=g.truncated) for g in found.groups]
        log.debug("duplicates after %d: %d group(s), %d of %d scanned", request.after_id, len(groups), found.scanned,
                  found.total)
        return index_pb2.FindDuplicatesResponse(
            groups=[g for g in groups if len(g.members) > 1], last_id=found.last_id, scanned=found.scanned,
            total=found.total, done=found.done)
    def UpdateTags(
        self, request: index_pb2.UpdateTagsRequest, context: grpc.ServicerContext
    ) -> index_pb2.UpdateTagsResponse:
        """Add and remove tags of several images in one transaction."""
        self._ready()
        if not request.ids:
            raise InvalidArgument("no ids")
        _check_ids(request.ids, self.config.max_batch * 10)
        add, remove = photo_pb.update_tags_args(request)
        updated = self.repo.update_tags(list(request.ids), add, remove, _timeout(context), request.collection)
        log.info("tags of %d image(s): +%d -%d", len(updated), len(add), len(remove))
        return index_pb2.UpdateTagsResponse(updated=updated)

    def ListTags(self, request: index_pb2.ListTagsRequest, context: grpc.ServicerContext) -> index_pb2.ListTagsResponse:
        """Every tag with the number of images carrying it."""
        self._ready()
        rows = self.repo.tags(_timeout(context), request.collection)
        return index_pb2.ListTagsResponse(tags=[index_pb2.TagCount(tag=t, count=n) for t, n in rows])

    def _original(self, meta: domain.ImageMeta) -> bytes:
        """The stored original of an image; empty for an adopted row or a missing file (logged)."""
        if not meta.sha256:
            return b""
        try:
            return b"".join(self.deps.media.open(meta.sha256))
        except FileNotFoundError:
            log.error("image %d: media file %s is missing", meta.id, meta.sha256)
            return b""


def _chunks(data: Iterator[bytes], content_type: str, total: int, sha256: str) -> Iterator[index_pb2.ImageChunk]:
    first = True
    for piece in data:
        for start in range(0, len(piece), 64 * 1024):
            part = piece[start:start + 64 * 1024]
            if first:
                yield index_pb2.ImageChunk(content_type=content_type, total_size=total, sha256=sha256, data=part)
                first = False
            else:
                yield index_pb2.ImageChunk(data=part)
    if first:
        yield index_pb2.ImageChunk(content_type=content_type, total_size=total, sha256=sha256)


def _search_pb(hits: list[domain.Hit], ms: float) -> index_pb2.SearchResponse:
    return index_pb2.SearchResponse(
        hits=[photo_pb.hit_pb(h) for h in hits],
        search_ms=ms,
    )


def _collection_pb(info: CollInfo) -> index_pb2.Collection:
    c = info.coll
    return index_pb2.Collection(name=c.name, model_id=c.model_id or "", dim=c.dim, count=info.count,
                                created_at=info.created_at, aliases=list(info.aliases), vector_type=c.vector_type)


def _check_ids(ids: Any, limit: int) -> None:
    if len(ids) > limit:
        raise TooLarge(f"at most {limit} ids per call")


def _result_pb(r: UpsertOutcome) -> index_pb2.UpsertResult:
    error = None if r.error is None else status.to_proto(r.error)
    return index_pb2.UpsertResult(id=r.id, created=r.created, sha256=r.sha256, error=error)


def _meta_pb(m: domain.ImageMeta) -> index_pb2.ImageMeta:
    return index_pb2.ImageMeta(
        id=m.id, sha256=m.sha256, label=m.label, source=m.source, file_name=m.file_name, width=m.width,
        height=m.height, content_type=m.content_type, size_bytes=m.size_bytes, model_id=m.model_id,
        created_at=m.created_at, original_ref=m.original_ref, **photo_pb.meta_fields(m),
    )


def create_server(config: Config, deps: Serving) -> Server:
    """A started server with the Index, health and reflection services, NOT_SERVING until the monitor says so.

    Raises PortInUse when the address is taken.
    """
    settings = ServerSettings(
        host=config.host, port=config.port, workers=config.workers, message_limit=config.max_message_mb * 1024 * 1024,
        default_deadline_s=config.default_deadline_s, metrics_prefix="index", unbounded=("BuildIndex",))
    servicer = IndexServicer(config, deps)
    server = create_grpc_server(settings, [SERVICE_NAME],
                                lambda s: index_pb2_grpc.add_IndexServicer_to_server(servicer, s), deps.failed)
    log.info("index service listening on %s:%d", config.host, server.port)
    return server


def serve(config: Config, deps: Deps) -> Server:
    """create_server, then the database monitor that drives its health (what __main__ and in-process tests run)."""
    from index_service.monitor import start_monitor  # the monitor module needs Deps from here

    server = create_server(config, deps)
    start_monitor(config, deps, server.set_serving)
    # Imported once the port is ours: Pillow's import is not worth paying for an instance that is refused.
    from index_service.adopt import start_adopter
    from index_service.thumbnail_mover import start_mover

    deps.adopter = start_adopter(config, deps.repo, deps.media)
    deps.mover = start_mover(config, deps.repo, deps.media)
    if config.target_recall:
        deps.keeper = deps.repo.recall_keeper()
        deps.keeper.start()
    return server
