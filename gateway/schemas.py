"""The JSON shapes of the HTTP API; they make the OpenAPI spec the gateway serves."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error response."""

    error: str = Field(description="short code, e.g. not_found")
    status: int
    message: str = Field(description="what went wrong, readable by a person")


class Hit(BaseModel):
    """One search result."""

    id: int
    score: float = Field(description="cosine similarity, 1 = same direction")
    label: str
    source: str
    width: int
    height: int
    thumbnail_url: str
    image_url: str
    tags: list[str] = Field([], description="the image's tags, sorted")
    taken_at: str | None = Field(None, description=(
        "capture time, ISO 8601 in UTC, as the index orders it: the true instant when the file states its offset, "
        "else the camera's clock read as UTC; null when the file says nothing"))
    below_cutoff: bool = Field(False, description=(
        "beyond the query's relevance cutoff (returned only when a cutoff was asked for with sort=relevance)"))
    taken_offset_minutes: int | None = Field(default=None, description=(
        "the capture time's offset from UTC in minutes when the file states it (-840..840), else null; "
        "taken_at plus this offset is the photo's local time, e.g. the day it was taken where it was taken"))


class Timings(BaseModel):
    """Where the time of a search went, in milliseconds."""

    embed_ms: float = Field(description="the embedder call (0 for 'more like this')")
    search_ms: float = Field(description="the index call, as seen by the gateway")
    database_ms: float = Field(description="time spent in the database, as reported by the index")
    total_ms: float


class SearchResult(BaseModel):
    """Hits of a search, best first, from position `offset` on."""

    hits: list[Hit]
    offset: int
    k: int
    has_more: bool = Field(description="whether asking with a larger offset may give more hits")
    timings: Timings
    truncated: bool = Field(False, description="the text was longer than the model's context and was cut")
    next: str | None = Field(None, description="cursor of the next page for GET /api/search/next; null when "
                                               "there is none (the last page, or GATEWAY_MAX_DEPTH reached)")


class Facts(BaseModel):
    """What a photo's own metadata (EXIF) says; a field the file lacks, or that failed a sanity check, is empty."""

    taken_at: str | None = Field(None, description=(
        "capture time as the camera's clock showed it, ISO 8601: with its offset when the file states one "
        "(2021-07-04T15:30:00+02:00), without a zone when it does not (2021-07-04T15:30:00)"))
    taken_offset_minutes: int | None = Field(None, description="the capture time's offset from UTC, when stated")
    camera_make: str = ""
    camera_model: str = ""
    latitude: float | None = Field(None, description="GPS latitude, degrees (WGS84)")
    longitude: float | None = Field(None, description="GPS longitude, degrees (WGS84)")
    notes: list[str] = Field([], description="one line per field of the file that was ignored, and why")


class ImageInfo(BaseModel):
    """Metadata of a stored image."""

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
    created_at: int = Field(description="seconds since the epoch, UTC")
    thumbnail_url: str
    image_url: str
    tags: list[str] = Field([], description="the image's tags, sorted")
    facts: Facts = Field(description="what the file itself says")
    file_modified_at: str | None = Field(None, description=(
        "the file's modification time on the disk it was loaded from (ISO 8601, UTC): when the file was last "
        "written, not when the picture was taken; null when unknown (e.g. uploads)"))


class UploadOutcome(BaseModel):
    """What happened to one uploaded file."""

    file: str
    outcome: Literal["created", "exists", "error"]
    id: int | None = None
    sha256: str | None = None
    status: int = Field(description="HTTP-style status of this file: 201, 200 or the error's")
    message: str | None = None


class UploadResult(BaseModel):
    """Per-file outcomes, in the order of the request."""

    results: list[UploadOutcome]
    created: int
    existing: int
    failed: int


class UploadFailure(ErrorBody):
    """No file was stored: the error (of the first file), and each file's outcome when the files were read."""

    results: list[UploadOutcome] = []
    created: int = 0
    existing: int = 0
    failed: int = 0


class Deleted(BaseModel):
    """A removed image."""

    deleted: int


class Label(BaseModel):
    """A label and how many images carry it."""

    label: str
    count: int


class Limits(BaseModel):
    """The limits this gateway enforces."""

    max_file_bytes: int
    max_request_bytes: int
    max_files: int
    max_query_chars: int
    max_k: int
    max_depth: int


class Stats(BaseModel):
    """The collection and the model behind it."""

    collection: str = Field("", description="the collection described (an alias resolved to its name)")
    count: int
    backend: str
    index_state: str
    collection_models: list[str]
    model_id: str
    model_name: str
    precision: str
    providers: list[str]
    semantic: bool = Field(description="false for random-weight models: their results carry no meaning")
    dim: int
    write_token_required: bool
    limits: Limits
    estimated: bool = Field(default=False, description=(
        "count is an estimate (within a few percent): the index estimates it for large collections so that "
        "stats cost the same at any size"))
    recall_estimate: float | None = Field(default=None, description=(
        "estimated recall@10 of approximate searches against exact search, measured by the index in the "
        "background on recall_queries sampled pictures; null until measured (collections under 1,000 "
        "pictures are not measured: their searches are exact)"))
    recall_queries: int = Field(default=0, description="how many sampled queries the recall estimate used")
    recall_measured_at: str | None = Field(default=None, description=(
        "when the recall estimate was made, ISO 8601 in UTC; null when never"))
    recall_target: float | None = Field(default=None, description=(
        "the recall@10 the index keeps by widening its search breadth (INDEX_TARGET_RECALL); null when off"))
    recall_below_target: bool = Field(default=False, description=(
        "the recall estimate is below the target (the index logs a warning and widens its search breadth)"))
    search_breadth: int = Field(default=0, description=(
        "the search breadth in use for the collection (pgvector's hnsw.ef_search, Lantern's ef)"))
    vector_type: str = Field(default="", description="how the collection stores its vectors: float32 or float16")
    reads_from_replica: bool = Field(default=False, description=(
        "searches go to a read replica that answers now (false: to the primary)"))
    unindexed: int = Field(default=0, description=(
        "pictures added to the indexed collection that its index has not taken in yet: searches find them "
        "by an exact scan meanwhile, and the index takes them in once uploads pause"))


class CollectionInfo(BaseModel):
    """A collection of the index."""

    name: str
    model_id: str = Field(description="'name@version' of the model of its vectors; empty until the first upsert")
    dim: int
    count: int
    aliases: list[str] = Field(description="the aliases that point at it ('default' is the one used by default)")


class Ready(BaseModel):
    """Whether each backend says SERVING."""

    ready: bool
    embedder: bool
    index: bool


class TagCount(BaseModel):
    """A tag and how many images carry it."""

    tag: str
    count: int


class TagEdit(BaseModel):
    """Tags to add to and remove from several images at once."""

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(description="image ids, 1 to 1000 of them")
    add: list[str] = Field([], description="tags to add: each trimmed, 1..100 characters, no control characters; "
                                           "at most 64")
    remove: list[str] = Field([], description="tags to remove (an image without one is not an error); at most 64")
    collection: str = Field("", description="collection or alias; empty = the alias 'default'")


class TagEditResult(BaseModel):
    """Which images were changed."""

    updated: list[int] = Field(description="the ids that exist (and were updated), sorted")
    missing: list[int] = Field(description="the ids asked for that do not exist")


class QueryErrorBody(ErrorBody):
    """A refused search: when the query's words are at fault, `position` is where (a character offset)."""

    position: int | None = Field(None, description="offset in `q` (0 = its first character) of the part at fault")
class DuplicateMember(BaseModel):
    """One image of a near-duplicate group."""

    id: int
    distance: float = Field(description="cosine distance to the group's first image (0 for that one)")
    label: str
    file_name: str
    width: int
    height: int
    size_bytes: int
    content_type: str
    created_at: int = Field(description="seconds since the epoch, UTC")
    thumbnail_url: str
    image_url: str
    display_url: str = Field(description="a JPEG of about 1600 px on the long side, for viewing")


class DuplicateGroup(BaseModel):
    """Images that are near-copies of each other: the smallest id first, then by distance to it."""

    members: list[DuplicateMember] = Field(description="two to 64 images")
    truncated: bool = Field(description="the group reached 64 images and stopped growing (max_distance too loose)")


class DuplicatePage(BaseModel):
    """The near-duplicate groups found in one page of the scan, and how far the scan has come."""

    groups: list[DuplicateGroup] = Field(description="groups whose smallest id lies in this page; often none")
    max_distance: float
    scanned: int = Field(description="images walked so far (progress: scanned / total)")
    total: int = Field(description="images in the collection now")
    next: int | None = Field(description="pass as `after` for the next page; null when the scan is done")
    done: bool
