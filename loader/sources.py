"""What to load: walking a folder tree, labels, the junk rules, sharding and reading files."""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from semsearch_common.sniff import image_type

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
# Caltech-256 ships a stray sub-folder of duplicates and a leftover file; both are known junk.
CALTECH_JUNK = (PurePosixPath("056.dog/greg"), PurePosixPath("198.spider/RENAME2"))
CALTECH_DIR = "256_ObjectCategories"
_CALTECH_CATEGORY = re.compile(r"^\d{3}\.(.+)$")

# Skip reasons, as counted in the summary and written to the report.
JUNK = "known junk"
NOT_IMAGE = "not an image"
EMPTY = "empty file"
TOO_LARGE = "too large"


@dataclass(frozen=True)
class Candidate:
    """A file found under the root: where it is, its label, or why it is skipped without reading."""

    path: Path
    rel: str  # POSIX path relative to the root: the stored file name and the shard key
    label: str
    skip: str | None = None
    mtime_ns: int = 0  # set by a folder sync: the modification time it recorded before reading


@dataclass(frozen=True)
class Shard:
    """Loader `index` of `count`; a file belongs to exactly one shard, by a hash of its relative path."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse 'i/n' (0 <= i < n)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"shard must look like i/n, e.g. 0/4, not {text!r}")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard {text!r}: need 0 <= i < n")
        return cls(index, count)

    def owns(self, rel: str) -> bool:
        """Whether this shard loads the file at `rel` (stable across machines and runs)."""
        return self.count == 1 or zlib.crc32(rel.encode("utf-8", "surrogateescape")) % self.count == self.index


Labeler = Callable[[PurePosixPath], str]


def caltech_label(rel: PurePosixPath) -> str:
    """The category of a Caltech-256 file: '056.dog/056_0001.jpg' -> 'dog'."""
    if len(rel.parts) < 2:
        return ""
    match = _CALTECH_CATEGORY.match(rel.parts[0])
    return match[1] if match else rel.parts[0]


def parent_label(root_name: str) -> Labeler:
    """Label each file with the name of the folder it is in (the root's own name for top-level files)."""
    return lambda rel: rel.parts[-2] if len(rel.parts) > 1 else root_name


def fixed_label(label: str) -> Labeler:
    """The same label (possibly empty) for every file."""
    return lambda rel: label


def caltech_root(path: Path) -> Path:
    """The folder holding the category folders: `path` itself or its 256_ObjectCategories child."""
    inner = path / CALTECH_DIR
    return inner if inner.is_dir() else path


def is_caltech_junk(rel: PurePosixPath) -> bool:
    """Whether a Caltech-256 path is one of the known junk entries (or inside one)."""
    return any(rel == junk or junk in rel.parents for junk in CALTECH_JUNK)


def walk(root: Path, labeler: Labeler, junk: Callable[[PurePosixPath], bool] = lambda rel: False,
         shard: Shard = Shard(), onerror: Callable[[OSError], None] | None = None) -> Iterator[Candidate]:
    """Every file under root in a stable (sorted) order, lazily, with its label or skip reason.

    Hidden folders (.git, .thumbnails, ...) are not entered and folder symlinks are not followed,
    so a tree with a link loop still ends; file symlinks are read like files. A folder that cannot be
    listed raises, unless `onerror` takes the error (and the walk goes on without that folder).
    """
    for folder, dirs, files in os.walk(root, onerror=onerror or _raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder)
        for name in sorted(files):
            path = base / name
            rel = PurePosixPath(path.relative_to(root).as_posix())
            key = str(rel)
            if not shard.owns(key):
                continue
            if junk(rel):
                yield Candidate(path, key, "", JUNK)
            elif rel.suffix.lower() not in IMAGE_SUFFIXES:
                yield Candidate(path, key, "", NOT_IMAGE)
            else:
                yield Candidate(path, key, labeler(rel))


def _raise(err: OSError) -> None:
    raise err


@dataclass(frozen=True)
class FileData:
    """A candidate that was read: its bytes and their sha256."""

    candidate: Candidate
    data: bytes
    sha256: str
    mtime_ns: int = 0  # the file's modification time (os.stat), sent apart from its EXIF capture time


def read(candidate: Candidate, max_bytes: int) -> FileData | str:
    """Read and hash a candidate; returns a skip reason for empty, oversized or non-image files.

    Raises OSError when the file cannot be read (the caller reports it as a failure).
    """
    stat = candidate.path.stat()
    size = stat.st_size
    if size == 0:
        return EMPTY
    if size > max_bytes:
        return TOO_LARGE
    data = candidate.path.read_bytes()
    if not data:
        return EMPTY
    if image_type(data) is None:  # by content: names and suffixes can lie
        return NOT_IMAGE
    return FileData(candidate, data, hashlib.sha256(data).hexdigest(), stat.st_mtime_ns)
