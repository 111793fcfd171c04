"""Content-addressed store of original images: <root>/ab/cd/<sha256>, written atomically."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from index_service.domain import SHA256_RE, InvalidArgument, StorageFull, StorageUnwritable

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
CHUNK = 64 * 1024
OrphanCheck = Callable[[list[str], Callable[[list[str]], None]], None]
# Files made from an original and kept beside it as <sha256><suffix> (renditions.py, thumbnails.py); they go
# with it: a delete and the orphan sweep remove them together.
RENDITION_SUFFIXES = (".display.jpg", ".thumb")


class MediaStore:
    """Files named only by their validated sha256; nothing from a client becomes a path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        """Where the file of `sha256` lives."""
        if not SHA256_RE.match(sha256):
            raise InvalidArgument("sha256 must be 64 lower-case hex characters")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        """Whether the file is stored."""
        return self.path_for(sha256).is_file()

    def put(self, sha256: str, data: bytes) -> None:
        """Write one file durably (see put_many)."""
        self.put_many([(sha256, data)])

    def put_many(self, files: list[tuple[str, bytes]]) -> None:
        """Write originals durably before returning (see put_paths)."""
        self.put_paths([(self.path_for(sha256), data) for sha256, data in files])

    def put_paths(self, files: list[tuple[Path, bytes]]) -> None:
        """Write files of this store (originals, renditions) durably before returning: temp files, flush,
        rename, flush the folders.

        One syncfs per step instead of an fsync per file: a batch of 500 fsyncs costs seconds.
        """
        if not files:
            return  # nothing to flush: a syncfs for no file still costs a round over the disk
        staged: list[tuple[Path, Path]] = []
        try:
            for final, data in files:
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
                staged.append((tmp, final))
                _write(tmp, data, fsync=not _HAVE_SYNCFS)
            self._flush({final.parent for _, final in staged}, files_done=not _HAVE_SYNCFS)
            for tmp, final in staged:
                os.replace(tmp, final)
            self._flush({final.parent for _, final in staged}, files_done=True)
        except BaseException as err:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):  # on a read-only store even this unlink fails
                    tmp.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
                raise StorageFull(f"the media store is full: {err.strerror}") from err
            if isinstance(err, OSError) and err.errno in UNWRITABLE_ERRNOS:
                raise StorageUnwritable(f"the media store is not writable: {err.strerror}") from err
            raise

    def sync(self, paths: list[Path]) -> None:
        """Make files already in place durable (their data and names), e.g. ones a reader wrote lazily."""
        if not _HAVE_SYNCFS:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        self._flush({p.parent for p in paths}, files_done=True)

    def _flush(self, folders: set[Path], files_done: bool) -> None:
        if _HAVE_SYNCFS:
            _syncfs(self.root)
        elif files_done:
            for folder in folders:
                _fsync_dir(folder)

    def open(self, sha256: str) -> Iterator[bytes]:
        """The file's bytes in chunks; FileNotFoundError when missing."""
        with open(self.path_for(sha256), "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def size(self, sha256: str) -> int:
        """The file's size in bytes."""
        return self.path_for(sha256).stat().st_size

    def delete(self, sha256: str) -> None:
        """Remove the file and its renditions if present."""
        self.path_for(sha256).unlink(missing_ok=True)
        for suffix in RENDITION_SUFFIXES:
            self.rendition_path(sha256, suffix).unlink(missing_ok=True)

    def rendition_path(self, sha256: str, suffix: str) -> Path:
        """Where a file made from `sha256`'s original lives: beside it, as <sha256><suffix>."""
        if suffix not in RENDITION_SUFFIXES:
            raise ValueError(f"unknown rendition {suffix!r}")
        return self.path_for(sha256).with_name(sha256 + suffix)

    def put_rendition(self, path: Path, data: bytes) -> None:
        """Write a rendition whole or not at all (temp file, fsync, rename): a crash never leaves half of one."""
        tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            _write(tmp, data, fsync=True)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def sweep(self, with_orphans: OrphanCheck, grace_s: float, batch: int = 1000) -> int:
        """Remove files older than `grace_s` whose sha256 has no row (crash leftovers); returns the count.

        `with_orphans(shas, remove)` must call `remove(orphans)` while it holds the per-sha locks that
        upserts take, so a file being re-added concurrently is never removed.
        """
        removed = sum(self.sweep_steps(with_orphans, grace_s, batch))
        if removed:
            log.info("media sweep removed %d orphan file(s)", removed)
        return removed

    def sweep_steps(self, with_orphans: OrphanCheck, grace_s: float, batch: int) -> Iterator[int]:
        """The sweep as a lazy walk: each step looks at most at `batch` files and yields its removals."""
        cutoff = time.time() - grace_s
        for names in _batched(self._old_files(cutoff), batch):
            removed = 0

            def remove(shas: list[str]) -> None:
                nonlocal removed
                for sha in shas:
                    self.delete(sha)
                    removed += 1

            for path in names:
                if path.name.startswith(TMP_PREFIX):
                    path.unlink(missing_ok=True)
                    removed += 1
            shas = list(dict.fromkeys(sha for p in names if (sha := self._owner(p))))
            if shas:
                with_orphans(shas, remove)
            yield removed

    def _owner(self, path: Path) -> str | None:
        """The sha256 whose original or rendition `path` is, where that file belongs; None for anything else."""
        sha, suffix = path.name[:64], path.name[64:]
        if suffix in ("", *RENDITION_SUFFIXES) and SHA256_RE.match(sha) and path.parent == self.path_for(sha).parent:
            return sha
        return None

    def _old_files(self, cutoff: float) -> Iterator[Path]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath) / name
                try:
                    if path.stat().st_mtime <= cutoff:
                        yield path
                except FileNotFoundError:
                    continue


def _write(path: Path, data: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs() if sys.platform.startswith("linux") else None
_HAVE_SYNCFS = _SYNCFS is not None


def _syncfs(path: Path) -> None:
    """Flush every dirty page and directory entry of the file system holding `path`."""
    assert _SYNCFS is not None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _batched(items: Iterable[Path], size: int) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
