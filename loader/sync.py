"""One pass of `python -m loader sync DIR`: make the index's files of one source match a folder.

Files whose size and mtime match the index's record are neither read nor hashed. Others are hashed:
content the index holds is linked to its path without embedding (moves, renames, copies, touched
files); new content goes through the loading pipeline, each upsert recording its file. Records of
files that are gone go last, so a moved file is linked at its new path before its old path is
forgotten, and its image (and id) survive. Every step is idempotent: a pass killed at any point and
run again ends in the same state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from loader import clients, sources
from loader.clients import Backoff, LoadError
from loader.config import LoaderConfig
from loader.pipeline import Pipeline
from loader.records import Hashed, Record, Records
from loader.report import Report
from loader.sources import Candidate
from protos.semsearch.v1 import index_pb2_grpc

log = logging.getLogger(__name__)

MAX_PATH_CHARS = 1000  # the index's StatsResponse.max_text_chars
NAME_NOT_UTF8 = "name not UTF-8"
PATH_TOO_LONG = "path too long"


class SyncRefused(RuntimeError):
    """The pass would do harm (e.g. remove every record because the folder looks empty); nothing was changed."""


@dataclass
class SyncSummary:
    """What one pass did; every image file found lands in exactly one of the file counts."""

    added: int = 0  # new content: embedded and stored
    linked: int = 0  # new paths of content the index held (moved, renamed, copied): nothing embedded
    updated: int = 0  # changed size or mtime: hashed again and recorded (re-embedded when the content is new)
    unchanged: int = 0  # same size and mtime as recorded: neither read nor hashed
    failed: int = 0  # unreadable files or folders (their records are kept), failed embeddings
    waiting: int = 0  # --watch: written too recently to be read yet (records kept; the next pass takes them)
    removed: int = 0  # records of files that are gone
    deleted: int = 0  # images deleted with their last file
    skipped: Counter[str] = field(default_factory=Counter)  # not images, empty, too large
    elapsed_s: float = 0.0
    stopped: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"added": self.added, "linked": self.linked, "updated": self.updated, "unchanged": self.unchanged,
                "failed": self.failed, "waiting": self.waiting, "removed": self.removed,
                "deleted_images": self.deleted, "skipped": dict(sorted(self.skipped.items())),
                "elapsed_s": round(self.elapsed_s, 3), "stopped": self.stopped}

    def text(self) -> str:
        """The human summary of a pass."""
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        lines = [f"added            {self.added}", f"linked/moved     {self.linked}",
                 f"updated          {self.updated}", f"removed          {self.removed} "
                 f"({self.deleted} image(s) deleted)", f"unchanged        {self.unchanged}",
                 f"failed           {self.failed}"]
        if self.waiting:
            lines.append(f"waiting          {self.waiting} (still being written)")
        if self.skipped:
            lines.append(f"skipped          {sum(self.skipped.values())} ({reasons})")
        lines.append(f"elapsed          {self.elapsed_s:.1f} s")
        if self.stopped:
            lines.append(f"stopped early:   {self.stopped}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Seen:
    """An image file found by the walk, with its size and mtime (taken before any read)."""

    candidate: Candidate
    size: int


class SyncPass:
    """Compare the folder with the index's records of `config.source` and apply the difference."""

    def __init__(self, config: LoaderConfig, root: Path, stop: threading.Event | None = None,
                 min_age_s: float = 0.0, allow_empty: bool = False) -> None:
        self.config = replace(config, record_files=True)
        self.root, self.min_age_s, self.allow_empty = root, min_age_s, allow_empty
        self.stop = stop or threading.Event()
        self.labeler = sources.parent_label(root.name)

    def run(self) -> SyncSummary:
        """One pass; raises LoadError when a service stays away, SyncRefused before doing harm."""
        started = time.monotonic()
        summary = SyncSummary()
        with clients.channel(self.config.index_addr) as channel:
            records = Records(index_pb2_grpc.IndexStub(channel), self.config.source, self.config.collection,
                              self.config.timeout_s, Backoff(self.config.retry_s, self.stop))
            self._pass(records, summary)
        summary.elapsed_s = time.monotonic() - started
        return summary

    def _pass(self, records: Records, summary: SyncSummary) -> None:
        known = records.all()
        seen, keep, bad_dirs = self._scan(summary)
        if not seen and not keep and not bad_dirs and known and not self.allow_empty:
            raise SyncRefused(f"{self.root} holds no image files but the index records {len(known)} under source "
                              f"{self.config.source!r}; refusing to remove them all (an unmounted disk?). Pass "
                              "--allow-empty to remove them.")
        changed = []
        for s in seen:
            r = known.get(s.candidate.rel)
            if r and r.sha256 and (r.size, r.mtime_ns) == (s.size, s.candidate.mtime_ns):
                summary.unchanged += 1
            else:
                changed.append(s)
        hashed = self._hash(changed, keep, summary)
        if self._stopped(summary):
            return
        ids = records.link(hashed)
        pending = [h for h in hashed if not ids.get(h.rel)]
        if pending:
            self._embed(pending, summary)
            if summary.stopped:
                return
            ids.update(records.link(pending))  # files whose content another path of this pass stored
        # One path per new content counts as added; its copies are linked to the stored row.
        embedded = {h.sha256: h.rel for h in reversed(pending)}
        for h in hashed:
            self._count(ids.get(h.rel, 0), known.get(h.rel), embedded.get(h.sha256) == h.rel, summary)
        # Changed files skipped after reading (now empty, or no image) are not present: their records go.
        changed_rels = {s.candidate.rel for s in changed}
        present = {h.rel for h in hashed} | {s.candidate.rel for s in seen if s.candidate.rel not in changed_rels}
        present |= keep
        gone = sorted(p for p in known if p not in present and not _under(p, bad_dirs))
        if self._stopped(summary):
            return
        summary.removed, summary.deleted = records.remove(gone)

    def _scan(self, summary: SyncSummary) -> tuple[list[Seen], set[str], list[str]]:
        """The image files under root (with size and mtime), the paths to keep as they are, unreadable folders."""
        bad_dirs: list[str] = []

        def unreadable(err: OSError) -> None:
            rel = os.path.relpath(err.filename, self.root) if err.filename else "."
            log.warning("cannot list %s: %s (its records are kept)", err.filename, err.strerror or err)
            bad_dirs.append(PurePosixPath(Path(rel).as_posix()).as_posix())
            summary.failed += 1

        seen: list[Seen] = []
        keep: set[str] = set()
        young = time.time_ns() - int(self.min_age_s * 1e9)
        for c in sources.walk(self.root, self.labeler, onerror=unreadable):
            skip = c.skip or _unstorable(c.rel)
            if skip:
                summary.skipped[skip] += 1
                continue
            try:
                st = c.path.stat()
            except OSError as err:
                log.warning("cannot stat %s: %s (its record is kept)", c.rel, err.strerror or err)
                summary.failed += 1
                keep.add(c.rel)
                continue
            if self.min_age_s and st.st_mtime_ns > young:
                summary.waiting += 1
                keep.add(c.rel)
                continue
            seen.append(Seen(replace(c, mtime_ns=st.st_mtime_ns), st.st_size))
        return seen, keep, bad_dirs

    def _hash(self, changed: list[Seen], keep: set[str], summary: SyncSummary) -> list[Hashed]:
        """Read and hash new and changed files; unreadable ones are kept as recorded, non-images dropped."""
        hashed = []
        for s in changed:
            if self.stop.is_set():
                break
            try:
                got = sources.read(s.candidate, self.config.max_file_bytes)
            except OSError as err:
                log.warning("cannot read %s: %s (its record is kept)", s.candidate.rel, err.strerror or err)
                summary.failed += 1
                keep.add(s.candidate.rel)
                continue
            if isinstance(got, str):
                summary.skipped[got] += 1
                continue
            hashed.append(Hashed(s.candidate.rel, got.sha256, s.size, s.candidate.mtime_ns))
        return hashed

    def _embed(self, pending: list[Hashed], summary: SyncSummary) -> None:
        """New content through the loading pipeline; each upsert records its file in the same transaction."""
        candidates = [Candidate(self.root / h.rel, h.rel, self.labeler(PurePosixPath(h.rel)), mtime_ns=h.mtime_ns)
                      for h in pending]
        pipeline = Pipeline(self.config, Report(None), expected_rows=len(pending))  # a big first sync is a bulk load
        done = threading.Event()

        def relay() -> None:  # a stop asked of the sync (SIGTERM in --watch) stops the pipeline's stages
            while not done.wait(0.2):
                if self.stop.is_set():
                    pipeline.stop.set()
                    return

        threading.Thread(target=relay, daemon=True, name="sync-stop-relay").start()
        try:
            pipeline.run(candidates)
        except LoadError as err:
            if not self.stop.is_set():
                raise
            summary.stopped = f"stopped ({err})"
        finally:
            done.set()

    def _count(self, image_id: int, before: Record | None, embedded: bool, summary: SyncSummary) -> None:
        if not image_id:
            summary.failed += 1  # the embedder or the index refused it (logged by the pipeline)
        elif before is not None:
            summary.updated += 1
        elif embedded:
            summary.added += 1
        else:
            summary.linked += 1

    def _stopped(self, summary: SyncSummary) -> bool:
        if self.stop.is_set() and not summary.stopped:
            summary.stopped = "stopped"
        return bool(summary.stopped)


def _unstorable(rel: str) -> str | None:
    """Why the index cannot record this path (its text limits), if it cannot."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # a name in another encoding (os.walk keeps its bytes as surrogates)
        return NAME_NOT_UTF8
    return PATH_TOO_LONG if len(rel) > MAX_PATH_CHARS else None


def _under(path: str, folders: list[str]) -> bool:
    """Whether `path` lies in one of `folders` (relative; '.' is the root)."""
    return any(d == "." or path.startswith(d + "/") for d in folders)
