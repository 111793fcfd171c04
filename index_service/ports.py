"""What the servicer needs of its dependencies, as Protocols: Repository and MediaStore, or fakes in servicer tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from index_service.catalog import Coll, CollInfo
from index_service.domain import Hit, ImageMeta, NewImage, SearchQuery, ServiceError, UpsertOutcome
from index_service.duplicates import Scan
from index_service.files import FileLink, FileRecord


class Store(Protocol):
    """The rows (index_service.repository.Repository); every timeout is in seconds, None for unbounded.

    `collection` names a collection or an alias; empty means the alias `default`.
    """

    @property
    def ready(self) -> bool: ...

    @property
    def dim(self) -> int: ...

    def collection(self, name: str, timeout_s: float | None) -> Coll: ...

    def collections(self, timeout_s: float | None) -> list[CollInfo]: ...

    def create_collection(self, name: str, model_id: str, dim: int, timeout_s: float | None,
                          vector_type: str = "") -> Coll: ...

    def drop_collection(self, name: str, timeout_s: float | None) -> int: ...

    def set_alias(self, alias: str, collection: str, expected: str, timeout_s: float | None) -> str: ...

    def upsert(self, items: Sequence[NewImage], timeout_s: float | None,
               collection: str = "", expected_rows: int = 0) -> list[UpsertOutcome]: ...

    def search(self, q: SearchQuery, timeout_s: float | None, collection: str = "") -> tuple[list[Hit], float]: ...

    def search_similar(self, image_id: int, q: SearchQuery, timeout_s: float | None,
                       collection: str = "") -> tuple[list[Hit], float]: ...

    def get(self, ids: Sequence[int], timeout_s: float | None, collection: str = "") -> list[ImageMeta]: ...

    def page(self, after_id: int, limit: int, timeout_s: float | None, collection: str = "",
             missing_from: str = "", with_bytes: bool = True) -> tuple[list[ImageMeta], Iterable[bytes], list[int]]: ...

    def thumbnail(self, image_id: int, timeout_s: float | None, collection: str = "") -> bytes: ...

    def delete(self, ids: Sequence[int], timeout_s: float | None, collection: str = "") -> list[int]: ...

    def labels(self, timeout_s: float | None, collection: str = "") -> list[tuple[str, int]]: ...

    def exists(self, shas: Sequence[str], timeout_s: float | None, collection: str = "") -> list[str]: ...

    def stats(self, timeout_s: float | None, collection: str = "") -> dict[str, Any]: ...

    def build_index(self, concurrently: bool, timeout_s: float | None,
                    collection: str = "") -> tuple[bool, float]: ...

    def index_state(self, timeout_s: float | None, collection: str = "") -> str: ...

    def list_files(self, source: str, after: str, limit: int, timeout_s: float | None,
                   collection: str = "") -> list[FileRecord]: ...

    def link_files(self, source: str, links: Sequence[FileLink], timeout_s: float | None,
                   collection: str = "") -> list[int]: ...

    def remove_files(self, source: str, paths: Sequence[str], timeout_s: float | None,
                     collection: str = "") -> tuple[int, list[int]]: ...
    def find_duplicates(self, max_distance: float, after_id: int, limit: int, timeout_s: float | None,
                        collection: str = "") -> Scan: ...
    def update_tags(self, ids: Sequence[int], add: tuple[str, ...], remove: tuple[str, ...],
                    timeout_s: float | None, collection: str = "") -> list[int]: ...

    def tags(self, timeout_s: float | None, collection: str = "") -> list[tuple[str, int]]: ...


class Media(Protocol):
    """The originals' files (index_service.media.MediaStore)."""

    def open(self, sha256: str) -> Iterator[bytes]: ...

    def size(self, sha256: str) -> int: ...


class Displays(Protocol):
    """Display renditions of the originals (index_service.renditions.Renditions)."""

    def display(self, sha256: str, content_type: str, width: int,
                height: int) -> tuple[str, int, Iterator[bytes]]: ...


class Serving(Protocol):
    """What the servicer and its server are given (server.Deps)."""

    @property
    def repo(self) -> Store: ...

    @property
    def media(self) -> Media: ...

    def failed(self, err: ServiceError) -> None: ...

    @property
    def renditions(self) -> Displays: ...
