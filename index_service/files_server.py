"""The folder-sync RPCs of the Index servicer (ListFiles, LinkFiles, RemoveFiles) and their input checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from index_service import domain
from index_service.domain import InvalidArgument, TooLarge
from index_service.files import FileLink
from protos.semsearch.v1 import index_pb2

if TYPE_CHECKING:
    from index_service.config import Config
    from index_service.ports import Store

MAX_TEXT = 1000  # as server.MAX_TEXT: the longest source or path


def check_source(source: str) -> None:
    """Raise unless a sync's source name is given and fits."""
    if not source:
        raise InvalidArgument("source is required")
    domain.check_text("source", source, MAX_TEXT)


def check_path(path: str) -> None:
    """Raise unless `path` is a relative POSIX path without empty, '.' or '..' parts (a folder sync's key)."""
    domain.check_text("path", path, MAX_TEXT)
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidArgument(f"path {path[:100]!r} must be relative, without empty, '.' or '..' parts")


class FilesServicer:
    """Mixed into IndexServicer: the records of folder syncs, over Store.list_files/link_files/remove_files."""

    config: Config
    repo: Store

    def _ready(self) -> None: ...  # IndexServicer's

    def _page_limit(self) -> int:
        return self.config.max_batch * 10  # StatsResponse.max_ids_per_request

    def ListFiles(self, request: index_pb2.ListFilesRequest,
                  context: grpc.ServicerContext) -> index_pb2.ListFilesResponse:
        """A page of the files recorded under a source, by path."""
        self._ready()
        check_source(request.source)
        domain.check_text("after_path", request.after_path, MAX_TEXT)
        limit = self._page_limit()
        if not 1 <= request.limit <= limit:
            raise TooLarge(f"limit must be between 1 and {limit}") if request.limit else InvalidArgument(
                "limit must be at least 1")
        records = self.repo.list_files(request.source, request.after_path, request.limit, _timeout(context),
                                       request.collection)
        return index_pb2.ListFilesResponse(files=[
            index_pb2.FileRecord(path=r.path, size_bytes=r.size_bytes, mtime_ns=r.mtime_ns, sha256=r.sha256,
                                 image_id=r.image_id) for r in records])

    def LinkFiles(self, request: index_pb2.LinkFilesRequest,
                  context: grpc.ServicerContext) -> index_pb2.LinkFilesResponse:
        """Record paths for content the collection holds, without embedding."""
        self._ready()
        check_source(request.source)
        if not request.files:
            raise InvalidArgument("no files")
        if len(request.files) > self._page_limit():
            raise TooLarge(f"at most {self._page_limit()} files per call")
        links = []
        for f in request.files:
            check_path(f.path)
            if not domain.SHA256_RE.match(f.sha256):
                raise InvalidArgument(f"{f.path[:100]!r}: sha256 must be 64 lower-case hex characters")
            if f.size_bytes < 0:
                raise InvalidArgument(f"{f.path[:100]!r}: size_bytes must not be negative")
            links.append(FileLink(f.path, f.sha256, f.size_bytes, f.mtime_ns))
        if len({f.path for f in links}) != len(links):
            raise InvalidArgument("a path appears more than once")
        ids = self.repo.link_files(request.source, links, _timeout(context), request.collection)
        return index_pb2.LinkFilesResponse(results=[
            index_pb2.LinkResult(path=f.path, image_id=i) for f, i in zip(links, ids, strict=True)])

    def RemoveFiles(self, request: index_pb2.RemoveFilesRequest,
                    context: grpc.ServicerContext) -> index_pb2.RemoveFilesResponse:
        """Forget gone paths; delete the images a sync stored that no file shows any more."""
        self._ready()
        check_source(request.source)
        if len(request.paths) > self._page_limit():
            raise TooLarge(f"at most {self._page_limit()} paths per call")
        for path in request.paths:
            check_path(path)
        removed, deleted = self.repo.remove_files(request.source, list(request.paths), _timeout(context),
                                                  request.collection)
        return index_pb2.RemoveFilesResponse(removed=removed, deleted_ids=deleted)


def _timeout(context: grpc.ServicerContext) -> float:
    remaining = context.time_remaining()
    return 0.0 if remaining is None else max(0.0, remaining)
