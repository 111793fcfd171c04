"""Fetching and unpacking the Caltech-256 tar: resumable download, MD5 check, safe extraction."""

from __future__ import annotations

import hashlib
import http.client
import logging
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

CALTECH256_URL = "https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar?download=1"
CALTECH256_MD5 = "67b4f42ca05d46448c6bb8ecd2220f6d"
CHUNK = 1024 * 1024


class ArchiveError(RuntimeError):
    """Download, verification or extraction failed; the message says what to do."""


def md5_of(path: Path) -> str:
    """The hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str | None, attempts: int = 5, timeout_s: float = 60.0,
             progress: bool | None = None) -> Path:
    """Fetch url to dest, resuming a partial `dest.part` with HTTP range requests, then verify the MD5.

    A complete dest whose checksum matches is kept without any network access. md5=None skips the check.
    """
    if dest.exists() and (md5 is None or md5_of(dest) == md5.lower()):
        log.info("%s is already here", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _fetch(url, part, timeout_s, progress)
            break
        except (OSError, http.client.HTTPException) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code < 500 and err.code != 429:
                raise ArchiveError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
            if attempt == attempts:
                raise ArchiveError(f"download of {url} failed after {attempts} attempts: {err}; "
                                   f"rerun to resume from {part.stat().st_size if part.exists() else 0} bytes"
                                   ) from None
            log.warning("download interrupted (%s); resuming (attempt %d of %d)", err, attempt + 1, attempts)
            time.sleep(min(2 ** attempt * 0.25, 10))
    if md5 is not None:
        got = md5_of(part)
        if got != md5.lower():
            part.unlink()
            raise ArchiveError(f"checksum mismatch for {url}: expected MD5 {md5.lower()}, got {got}; the file "
                               "was removed, rerun to download it again (or pass the right --md5)")
    part.replace(dest)
    return dest


def _fetch(url: str, part: Path, timeout_s: float, progress: bool | None) -> None:
    """One attempt: continue `part` from its current size."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing after what we have: the part file is complete
            return
        raise
    with response:
        if have and response.status != 206:
            log.info("the server ignored the range request; downloading from the start")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with part.open("ab" if have else "wb") as out, _Meter(total, have, progress) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar(len(chunk))
        size = part.stat().st_size
        if total is not None and size < total:
            raise http.client.IncompleteRead(b"", total - size)


class _Meter:
    """tqdm on a terminal, otherwise a log line now and then."""

    def __init__(self, total: int | None, initial: int, progress: bool | None) -> None:
        self.total, self.done = total, initial
        self._last = time.monotonic()
        self._tqdm: Any = None
        if progress if progress is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc="download")

    def __enter__(self) -> Callable[[int], None]:
        return self.update

    def __exit__(self, *exc: object) -> None:
        if self._tqdm is not None:
            self._tqdm.close()

    def update(self, n: int) -> None:
        """Note n more bytes."""
        self.done += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif time.monotonic() - self._last > 10:
            self._last = time.monotonic()
            of = f" of {self.total / 1e6:.0f} MB" if self.total else ""
            log.info("downloaded %.0f MB%s", self.done / 1e6, of)


def _strict_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, plus a refusal of absolute names (which it would quietly make relative)."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts:
        raise tarfile.AbsolutePathError(member) if name.is_absolute() else tarfile.OutsideDestinationError(
            member, member.name)
    return tarfile.data_filter(member, dest)


def extract(archive: Path, dest: Path) -> list[Path]:
    """Unpack a tar into dest all at once (never half): returns the top-level entries it made.

    Entries escaping dest (absolute paths, '..', links pointing outside, device files) reject the
    whole archive. The tree appears under its final name only after every member is out.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".extracting-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)  # a run killed mid-extraction left it behind
    staging.mkdir()
    try:
        with tarfile.open(archive) as tar:
            _extract_all(tar, staging)
        made = []
        for entry in sorted(staging.iterdir()):
            target = dest / entry.name
            if target.exists():
                raise ArchiveError(f"{target} already exists; remove it or point --path at it")
            entry.rename(target)
            made.append(target)
        return made
    except tarfile.FilterError as err:
        raise ArchiveError(f"{archive} is unsafe and was not extracted: {err}") from None
    except (tarfile.TarError, EOFError) as err:
        raise ArchiveError(f"{archive} is not a readable tar archive: {err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_all(tar: tarfile.TarFile, where: Path) -> None:
    # Check every member before writing any, so an unsafe archive leaves nothing behind.
    members = tar.getmembers()
    for member in members:
        _strict_filter(member, str(where))
    tar.extractall(where, members=members, filter=_strict_filter)

