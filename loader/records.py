"""The index's file records of one sync source, through ListFiles, LinkFiles and RemoveFiles (paged, retried)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from loader import clients
from loader.clients import Backoff
from protos.semsearch.v1 import index_pb2, index_pb2_grpc

T = TypeVar("T")
PAGE = 1000  # records per call, capped by the server's max_ids_per_request


@dataclass(frozen=True)
class Record:
    """What the index recorded of a file (sha256 '' when its image was deleted since)."""

    size: int
    mtime_ns: int
    sha256: str
    image_id: int


@dataclass(frozen=True)
class Hashed:
    """A file read and hashed now, with the size and mtime seen just before reading it."""

    rel: str
    sha256: str
    size: int
    mtime_ns: int


class Records:
    """Calls about one source of one collection; every call is idempotent, so retries are safe."""

    def __init__(self, index: index_pb2_grpc.IndexStub, source: str, collection: str, timeout_s: float,
                 backoff: Backoff) -> None:
        self.index, self.source, self.collection = index, source, collection
        self.timeout_s, self.backoff = timeout_s, backoff
        stats = clients.call(lambda: index.Stats(index_pb2.StatsRequest(collection=collection), timeout=timeout_s),
                             "index Stats", backoff)
        self.page = min(PAGE, stats.max_ids_per_request or PAGE)

    def all(self) -> dict[str, Record]:
        """Every file recorded under the source, by path."""
        out: dict[str, Record] = {}
        after = ""
        while True:
            request = index_pb2.ListFilesRequest(collection=self.collection, source=self.source, after_path=after,
                                                 limit=self.page)
            reply = clients.call(partial(self.index.ListFiles, request, timeout=self.timeout_s), "index ListFiles",
                                 self.backoff)
            for f in reply.files:
                out[f.path] = Record(f.size_bytes, f.mtime_ns, f.sha256, f.image_id)
            if len(reply.files) < self.page:
                return out
            after = reply.files[-1].path

    def link(self, files: Sequence[Hashed]) -> dict[str, int]:
        """Record files whose content the index holds; the image id per path (0: not held, not recorded)."""
        out: dict[str, int] = {}
        for chunk in _chunks(files, self.page):
            request = index_pb2.LinkFilesRequest(collection=self.collection, source=self.source, files=[
                index_pb2.FileLink(path=f.rel, sha256=f.sha256, size_bytes=f.size, mtime_ns=f.mtime_ns)
                for f in chunk])
            reply = clients.call(partial(self.index.LinkFiles, request, timeout=self.timeout_s), "index LinkFiles",
                                 self.backoff)
            out.update((r.path, r.image_id) for r in reply.results)
        return out

    def remove(self, paths: Sequence[str]) -> tuple[int, int]:
        """Forget gone paths (and delete the images only they showed); (records removed, images deleted).

        Called with no paths too: the index then deletes what an interrupted sync left without a file.
        """
        removed = deleted = 0
        for chunk in _chunks(paths, self.page) if paths else [[]]:
            request = index_pb2.RemoveFilesRequest(collection=self.collection, source=self.source, paths=chunk)
            reply = clients.call(partial(self.index.RemoveFiles, request, timeout=self.timeout_s),
                                 "index RemoveFiles", self.backoff)
            removed += reply.removed
            deleted += len(reply.deleted_ids)
        return removed, deleted


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
