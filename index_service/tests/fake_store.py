"""In-memory fakes of what IndexServicer needs (index_service.ports): rows, files and the error hook, no Postgres."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from index_service import duplicates, filters
from index_service.catalog import Coll, CollInfo
from index_service.domain import Hit, ImageMeta, Mismatch, NewImage, NotFound, SearchQuery, ServiceError, UpsertOutcome
from index_service.files import FileLink, FileRecord
from index_service.photos import label_of, merge_tags
from semsearch_common.errors import Reason

DIM = 8


class FakeStore:
    """Rows in a dict, exact search by dot product; records the timeout of every call.

    `fail` makes every call raise that error (a lost database, a full disk).
    """

    def __init__(self, dim: int = DIM) -> None:
        self.ready, self.dim = True, dim
        self.rows: dict[int, NewImage] = {}
        self.tagged: dict[int, tuple[str, ...]] = {}  # the rows' tags as edited since upsert
        self.model: str | None = None
        self.fail: ServiceError | None = None
        self.timeouts: dict[str, float | None] = {}
        self.files: dict[tuple[str, str], tuple[int, int, int]] = {}  # (source, path) -> (image id, size, mtime)
        self.synced: set[int] = set()  # images a folder sync stored

    def _call(self, name: str, timeout_s: float | None) -> None:
        self.timeouts[name] = timeout_s
        if self.fail is not None:
            raise self.fail

    def collection(self, name: str, timeout_s: float | None) -> Coll:
        self._call("collection", timeout_s)
        if name not in ("", "default", "c1"):
            raise NotFound(f"no collection or alias {name!r}")
        return Coll("c1", "images", self.dim, self.model)

    def collections(self, timeout_s: float | None) -> list[CollInfo]:
        return [CollInfo(self.collection("", timeout_s), len(self.rows), 1_700_000_000, ("default",))]

    def create_collection(self, name: str, model_id: str, dim: int, timeout_s: float | None,
                          vector_type: str = "") -> Coll:
        raise NotImplementedError("the fake holds one collection")

    def drop_collection(self, name: str, timeout_s: float | None) -> int:
        raise NotImplementedError("the fake holds one collection")

    def set_alias(self, alias: str, collection: str, expected: str, timeout_s: float | None) -> str:
        raise NotImplementedError("the fake holds one collection")

    def upsert(self, items: Sequence[NewImage], timeout_s: float | None, collection: str = "",
               expected_rows: int = 0) -> list[UpsertOutcome]:
        self._call("upsert", timeout_s)
        out = []
        for item in items:
            self.model = self.model or item.model_id
            if item.model_id != self.model:
                out.append(UpsertOutcome(item.sha256, error=Mismatch(f"the collection holds model {self.model!r}")))
                continue
            found = [i for i, row in self.rows.items() if row.sha256 == item.sha256]
            if found:
                self.tagged[found[0]] = merge_tags(self.tagged[found[0]], item.tags)
                out.append(UpsertOutcome(item.sha256, id=found[0]))
            else:
                new_id = max(self.rows, default=0) + 1
                self.rows[new_id] = item
                self.tagged[new_id] = item.tags
                out.append(UpsertOutcome(item.sha256, id=new_id, created=True))
                if item.record_file:
                    self.synced.add(new_id)
            if item.record_file:
                self.files[(item.source, item.file_name)] = (out[-1].id, len(item.original), item.file_mtime_ns)
        return out

    def search(self, q: SearchQuery, timeout_s: float | None, collection: str = "") -> tuple[list[Hit], float]:
        self._call("search", timeout_s)
        if q.vector is not None and len(q.vector) != self.dim:
            raise Mismatch(f"vector has {len(q.vector)} dimensions, the collection has {self.dim}",
                           reason=Reason.DIMENSION_MISMATCH)
        if q.model_id and self.model is not None and q.model_id != self.model:
            raise Mismatch(f"the collection holds model {self.model!r}, the query comes from {q.model_id!r}")
        hits = [Hit(i, float(row.vector @ q.vector), label_of(row.label, self.tagged[i]), row.source, row.width,
                    row.height, self.tagged[i], row.facts.taken_at,
                    taken_offset_minutes=row.facts.taken_offset_minutes)
                for i, row in self.rows.items() if i != q.exclude_id and self._matches(i, q)]
        return filters.arrange(sorted(hits, key=lambda h: (-h.score, h.id)), q, 0.05), 0.5

    def _matches(self, i: int, q: SearchQuery) -> bool:
        """The tag, source, date and camera filters (the real ones are SQL: index_service/filters.py)."""
        row, tags, f = self.rows[i], set(self.tagged[i]), q.photo
        any_tags = {*q.labels, *f.tags_any}
        taken = row.facts.taken_at
        camera = {row.facts.camera_make.lower(), row.facts.camera_model.lower()}
        return ((not any_tags or bool(tags & any_tags)) and set(f.tags_all) <= tags
                and (not q.source or row.source == q.source)
                and (f.taken_from is None or (taken is not None and taken >= f.taken_from))
                and (f.taken_until is None or (taken is not None and taken < f.taken_until))
                and (not f.camera or f.camera.lower() in camera)
                and (f.has_location is None or f.has_location == (row.facts.latitude is not None)))

    def search_similar(self, image_id: int, q: SearchQuery, timeout_s: float | None,
                       collection: str = "") -> tuple[list[Hit], float]:
        vector = self._row(image_id).vector
        return self.search(dataclasses.replace(q, vector=vector), timeout_s, collection)

    def get(self, ids: Sequence[int], timeout_s: float | None, collection: str = "") -> list[ImageMeta]:
        self._call("get", timeout_s)
        return [ImageMeta(i, r.sha256, label_of(r.label, self.tagged[i]), r.source, r.file_name, r.width, r.height,
                          r.content_type, len(r.original), r.model_id, 1_700_000_000, "", self.tagged[i], r.facts,
                          r.file_mtime_ns)
                for i in dict.fromkeys(ids) if (r := self.rows.get(i)) is not None]

    def page(self, after_id: int, limit: int, timeout_s: float | None, collection: str = "",
             missing_from: str = "", with_bytes: bool = True) -> tuple[list[ImageMeta], list[bytes], list[int]]:
        self._call("page", timeout_s)
        ids = sorted(i for i in self.rows if i > after_id)[:limit]
        return self.get(ids, timeout_s), [self.rows[i].thumbnail if with_bytes else b"" for i in ids], ids

    def thumbnail(self, image_id: int, timeout_s: float | None, collection: str = "") -> bytes:
        self._call("thumbnail", timeout_s)
        return self._row(image_id).thumbnail

    def delete(self, ids: Sequence[int], timeout_s: float | None, collection: str = "") -> list[int]:
        self._call("delete", timeout_s)
        gone = [i for i in ids if self.rows.pop(i, None) is not None]
        for i in gone:
            del self.tagged[i]
        return gone

    def labels(self, timeout_s: float | None, collection: str = "") -> list[tuple[str, int]]:
        self._call("labels", timeout_s)
        untagged = sum(not t for t in self.tagged.values())
        return ([("", untagged)] if untagged else []) + self._tag_counts()

    def exists(self, shas: Sequence[str], timeout_s: float | None, collection: str = "") -> list[str]:
        self._call("exists", timeout_s)
        stored = {r.sha256 for r in self.rows.values()}
        return [s for s in shas if s in stored]

    def stats(self, timeout_s: float | None, collection: str = "") -> dict[str, Any]:
        self._call("stats", timeout_s)
        return {"count": len(self.rows), "backend": "pgvector", "index_state": "ready", "dim": self.dim,
                "model_ids": [self.model] if self.model else []}

    def build_index(self, concurrently: bool, timeout_s: float | None, collection: str = "") -> tuple[bool, float]:
        self._call("build_index", timeout_s)
        return True, 0.25

    def index_state(self, timeout_s: float | None, collection: str = "") -> str:
        self._call("index_state", timeout_s)
        return "ready"

    def list_files(self, source: str, after: str, limit: int, timeout_s: float | None,
                   collection: str = "") -> list[FileRecord]:
        self._call("list_files", timeout_s)
        paths = sorted((p for s, p in self.files if s == source and p > after), key=lambda p: p.encode())[:limit]
        out = []
        for path in paths:
            image_id, size, mtime = self.files[(source, path)]
            row = self.rows.get(image_id)
            out.append(FileRecord(path, size, mtime, row.sha256 if row else "", image_id if row else 0))
        return out

    def link_files(self, source: str, links: Sequence[FileLink], timeout_s: float | None,
                   collection: str = "") -> list[int]:
        self._call("link_files", timeout_s)
        held = {r.sha256: i for i, r in self.rows.items()}
        for f in links:
            if f.sha256 in held:
                self.files[(source, f.path)] = (held[f.sha256], f.size_bytes, f.mtime_ns)
        return [held.get(f.sha256, 0) for f in links]

    def remove_files(self, source: str, paths: Sequence[str], timeout_s: float | None,
                     collection: str = "") -> tuple[int, list[int]]:
        self._call("remove_files", timeout_s)
        removed = sum(self.files.pop((source, p), None) is not None for p in paths)
        shown = {image_id for image_id, _, _ in self.files.values()}
        gone = sorted(i for i in self.synced if i not in shown and self.rows.pop(i, None) is not None)
        self.synced -= set(gone)
        return removed, gone
    def find_duplicates(self, max_distance: float, after_id: int, limit: int, timeout_s: float | None,
                        collection: str = "") -> duplicates.Scan:
        """The real grouping over exact neighbours (every row, not the index's nearest few)."""
        self._call("find_duplicates", timeout_s)
        self.collection(collection, timeout_s)
        ids = sorted(i for i in self.rows if i > after_id)
        page, last = ids[:limit], (ids[:limit] or [after_id])[-1]

        def neighbours(batch: list[int]) -> list[tuple[int, int]]:
            return [(a, b) for a in batch for b in self.rows if b != a
                    and 1.0 - float(self.rows[a].vector @ self.rows[b].vector) <= max_distance + duplicates.ROUNDING]

        def distance(a: int, b: int) -> float:
            return max(0.0, 1.0 - float(self.rows[a].vector @ self.rows[b].vector))

        groups = []
        for members, truncated in duplicates.groups(page, neighbours):
            first = min(members)
            rest = sorted(members - {first}, key=lambda i: (distance(first, i), i))
            groups.append(duplicates.Group((first, *rest), (0.0, *(distance(first, i) for i in rest)), truncated))
        metas = {m.id: m for m in self.get([i for g in groups for i in g.ids], timeout_s)}
        return duplicates.Scan(groups, last, sum(1 for i in self.rows if i <= last), len(self.rows),
                               len(ids) <= limit, metas)
    def update_tags(self, ids: Sequence[int], add: tuple[str, ...], remove: tuple[str, ...],
                    timeout_s: float | None, collection: str = "") -> list[int]:
        self._call("update_tags", timeout_s)
        found = sorted({i for i in ids if i in self.rows})
        for i in found:
            self.tagged[i] = merge_tags(self.tagged[i], add, remove)
        return found

    def tags(self, timeout_s: float | None, collection: str = "") -> list[tuple[str, int]]:
        self._call("tags", timeout_s)
        return self._tag_counts()

    def _tag_counts(self) -> list[tuple[str, int]]:
        names = sorted({t for tags in self.tagged.values() for t in tags})
        return [(n, sum(n in tags for tags in self.tagged.values())) for n in names]

    def _row(self, image_id: int) -> NewImage:
        if image_id not in self.rows:
            raise NotFound(f"no image with id {image_id}")
        return self.rows[image_id]


class FakeMedia:
    """Originals by hash, in memory."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.missing: set[str] = set()

    def _data(self, sha256: str) -> bytes:
        if sha256 in self.missing:
            raise FileNotFoundError(sha256)
        return next(r.original for r in self.store.rows.values() if r.sha256 == sha256)

    def open(self, sha256: str) -> Iterator[bytes]:
        yield self._data(sha256)

    def size(self, sha256: str) -> int:
        return len(self._data(sha256))


class FakeRenditions:
    """Display renditions: the original itself, typed as JPEG; remembers which hashes were asked for."""

    def __init__(self, media: FakeMedia) -> None:
        self.media = media
        self.asked: list[str] = []

    def display(self, sha256: str, content_type: str, width: int, height: int) -> tuple[str, int, Iterator[bytes]]:
        self.asked.append(sha256)
        data = self.media._data(sha256)
        return "image/jpeg", len(data), iter([data])


class FakeDeps:
    """The servicer's dependencies (ports.Serving), remembering the errors the server reported."""

    def __init__(self) -> None:
        self.repo = FakeStore()
        self.media = FakeMedia(self.repo)
        self.renditions = FakeRenditions(self.media)
        self.errors: list[ServiceError] = []

    def failed(self, err: ServiceError) -> None:
        self.errors.append(err)


def unit_vector(seed: int, dim: int = DIM) -> np.ndarray:
    """A random unit vector."""
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)
