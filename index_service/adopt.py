"""Making the prototype's adopted rows whole, in the background, one bounded batch at a time.

Migration 3 adopts the prototype's `image_table` with only a path per row (`original_ref`): no sha256,
no thumbnail, no size. After start-up a thread walks every collection's rows with `sha256 IS NULL` and
a path, reads each file (adopt_files), copies it into the media store (so "no row without its file"
holds even after the prototype's folder moves or goes) with its thumbnail beside it (thumbnails.py), and
fills sha256, content type, size and, where the table has the columns, the photo facts. Loading that
folder again then adds nothing: the loader asks Exists by sha256.

Duplicates keep one row: a file whose content another row of the table already holds (a second
prototype row of the same picture, or a later load of it) loses its adopted row; the row kept is the
lowest id of the prototype's copies, or the row that was there before. Rows whose file is missing or
unreadable are kept as they are, logged one line each with a summary per pass, counted in the metric
`index_adopted_rows{outcome}`, and tried again at the next start.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from psycopg2.extensions import cursor

from index_service import adopt_files, catalog, thumbnails
from index_service.adopt_files import Missing, Unreadable, Whole
from index_service.config import Config
from index_service.media import MediaStore
from index_service.metrics import ADOPTED
from index_service.one_pass import OnePass
from index_service.pool import one_row, run_tx
from index_service.repository import Repository
from index_service.shas import lock_keys as _lock_keys

log = logging.getLogger(__name__)

# One transaction per batch, each a few statements per row: short enough never to hold up an upsert.
TX_TIMEOUT_S = 60.0
# Files held in memory at once: a batch is stored and committed early when its files pass this.
BATCH_BYTES = 64 * 1024 * 1024
# The photo facts' columns (migration 6): written when the table has them all.
FACT_COLUMNS = ("taken_at", "taken_offset_minutes", "camera_make", "camera_model", "latitude", "longitude",
                "file_mtime_ns")


@dataclass
class Report:
    """What the passes so far did, by outcome: whole, duplicate, missing, unreadable."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: dict[int, str] = field(default_factory=dict)  # row id -> why its file was not adopted

    def add(self, outcome: str, row_id: int, why: str = "") -> None:
        """Count one row's outcome (and remember why a file failed)."""
        self.counts[outcome] += 1
        ADOPTED.labels(outcome).inc()
        if why:
            self.problems[row_id] = why


class Adopter(OnePass):
    """The background walk over adopted rows (it begins once the database is migrated and never holds up
    start-up or health); `done` is set once every collection was walked."""

    task = "adopting the prototype's rows"

    def __init__(self, config: Config, repo: Repository, media: MediaStore) -> None:
        super().__init__("index-adopt", config, repo, media)
        self.report = Report()

    def run(self) -> Report:
        """Walk every collection's rows that lack a sha256 and have a path; returns the report so far."""
        before = Counter(self.report.counts)
        for table in run_tx(self.repo.pool, catalog.tables, TX_TIMEOUT_S):
            facts = _has_fact_columns(self.repo, table)
            while not self._stop.is_set() and (rows := self._pending(table)):
                self._adopt(table, rows, facts)
                self._after[table] = rows[-1][0]
        done = self.report.counts - before
        if done:
            log.info("prototype rows: %d made whole, %d duplicates removed, %d missing files, %d unreadable "
                     "(rows kept)", done["whole"], done["duplicate"], done["missing"], done["unreadable"])
        return self.report

    def _pending(self, table: str) -> list[tuple[int, str]]:
        after = self._after.get(table, 0)

        def work(cur: cursor) -> list[tuple[int, str]]:
            cur.execute(f"SELECT id, original_ref FROM {table} WHERE sha256 IS NULL AND original_ref IS NOT NULL "
                        "AND id > %s ORDER BY id LIMIT %s", (after, self.config.adopt_batch))
            return [(int(r[0]), str(r[1])) for r in cur.fetchall()]

        return run_tx(self.repo.pool, work, TX_TIMEOUT_S)

    def _adopt(self, table: str, rows: list[tuple[int, str]], facts: bool) -> None:
        """Read the batch's files (no transaction open meanwhile), store them, then fill or drop the rows."""
        wholes: list[tuple[int, Whole]] = []
        for row_id, ref in rows:
            if sum(len(w.data) for _, w in wholes) > BATCH_BYTES:
                self._store(table, wholes, facts)
                wholes = []
            try:
                path = adopt_files.locate(ref, self.config.prototype_root)
                wholes.append((row_id, adopt_files.make_whole(*adopt_files.read(path, self._max_bytes))))
            except Missing as err:
                log.warning("prototype row %d: file %s is missing (%s); row kept", row_id, ref, err)
                self.report.add("missing", row_id, f"missing: {err}")
            except Unreadable as err:
                log.warning("prototype row %d: file %s cannot be adopted: %s; row kept", row_id, ref, err)
                self.report.add("unreadable", row_id, f"unreadable: {err}")
        if wholes:
            self._store(table, wholes, facts)

    def _store(self, table: str, wholes: list[tuple[int, Whole]], facts: bool) -> None:
        # Files are durable before any row names them, as in an upsert; a crash leaves only orphans for the sweep.
        self.media.put_paths(thumbnails.missing_files(self.media, ((w.sha256, w.data, w.thumbnail) for _, w in wholes)))
        outcomes = run_tx(self.repo.pool, lambda cur: _fill(cur, table, wholes, facts), TX_TIMEOUT_S)
        for row_id, outcome in outcomes:
            self.report.add(outcome, row_id)

    @property
    def _max_bytes(self) -> int:
        # The bound every original meets on its way in (an Upsert message), so GetImage can send it back.
        return self.config.max_message_mb * 1024 * 1024


def _fill(cur: cursor, table: str, wholes: list[tuple[int, Whole]], facts: bool) -> list[tuple[int, str]]:
    """Fill each row, or delete it when its content already has a row; under the upserts' per-sha locks."""
    _lock_keys(cur, [w.sha256 for _, w in wholes])
    out = []
    for row_id, w in wholes:
        cur.execute(f"SELECT id FROM {table} WHERE sha256 = %s", (w.sha256,))
        holder = cur.fetchone()
        if holder is not None:
            cur.execute(f"DELETE FROM {table} WHERE id = %s AND sha256 IS NULL", (row_id,))
            log.info("prototype row %d holds the same picture as row %d; row %d removed", row_id, holder[0], row_id)
            out.append((row_id, "duplicate"))
            continue
        columns, values = _assignments(w, facts)
        cur.execute(f"UPDATE {table} SET {', '.join(f'{c} = %s' for c in columns)} "
                    "WHERE id = %s AND sha256 IS NULL", (*values, row_id))
        if cur.rowcount:
            out.append((row_id, "whole"))
    return out


def _assignments(w: Whole, facts: bool) -> tuple[list[str], list[Any]]:
    columns = ["sha256", "content_type", "width", "height", "size_bytes"]
    values: list[Any] = [w.sha256, w.content_type, w.width, w.height, len(w.data)]
    if facts:
        f = w.facts
        located = f.latitude is not None and f.longitude is not None
        columns += FACT_COLUMNS
        values += [f.taken_at, f.taken_offset_minutes, f.camera_make, f.camera_model,
                   f.latitude if located else None, f.longitude if located else None, w.mtime_ns]
    return columns, values


def _has_fact_columns(repo: Repository, table: str) -> bool:
    def work(cur: cursor) -> bool:
        cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = %s AND column_name = ANY(%s)", (table, list(FACT_COLUMNS)))
        return int(one_row(cur)[0]) == len(FACT_COLUMNS)

    return run_tx(repo.pool, work, TX_TIMEOUT_S)


def start_adopter(config: Config, repo: Repository, media: MediaStore) -> Adopter:
    """A started adopter (it waits for the migrations before its first query)."""
    adopter = Adopter(config, repo, media)
    adopter.start()
    return adopter
