"""Moving the thumbnails of rows from before issue 14 out of the database, one bounded batch at a time.

After start-up a thread walks every collection's rows whose `thumbnail` column still holds bytes, in
id order: it writes each as <sha256>.thumb into the media store (thumbnails.py), makes the batch's
files durable, and only then sets the column of exactly those rows to NULL. A kill at any point leaves
either a file whose column is not cleared yet (the next pass clears it) or nothing: a column is never
cleared before its file is on disk. A file already there (another collection's copy of the picture, or
one a reader remade) is kept and flushed. Rows without a sha256 (prototype rows not adopted yet) keep
their column. Counted in `index_thumbnails_moved{outcome}`; INDEX_MOVE_THUMBNAILS=false turns it off.

The space the column held returns to Postgres for reuse by later rows (autovacuum); `VACUUM FULL` of a
collection's table gives it back to the operating system (it locks the table while it rewrites it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from psycopg2.extensions import cursor

from index_service import catalog, thumbnails
from index_service.config import Config
from index_service.media import MediaStore
from index_service.metrics import THUMBNAILS_MOVED
from index_service.one_pass import OnePass
from index_service.pool import one_row, run_tx
from index_service.repository import Repository

log = logging.getLogger(__name__)

TX_TIMEOUT_S = 60.0
BATCH_ROWS = 500
BATCH_BYTES = 32 * 1024 * 1024  # a thumbnail may be up to 4 MB: the batch is cut by bytes too
PAUSE_S = 0.05  # between batches: upserts and searches share the two cores
LOG_EVERY = 10_000


class ThumbnailMover(OnePass):
    """The background move of old rows' thumbnails into the media store; `done` is set once every
    collection was walked."""

    task = "moving thumbnails into the media store"

    def __init__(self, config: Config, repo: Repository, media: MediaStore) -> None:
        super().__init__("index-thumbnails", config, repo, media)
        self.moved = 0

    def run(self) -> int:
        """Walk every collection once; returns the number of rows whose column this call emptied."""
        before = self.moved
        for table in run_tx(self.repo.pool, catalog.tables, TX_TIMEOUT_S):
            if not self._any(table):
                continue
            start = self.moved
            while not self._stop.is_set() and (batch := self._pending(table)):
                self.moved += self._move(table, batch)
                self._after[table] = batch[-1][0]
                if self.moved // LOG_EVERY > (self.moved - len(batch)) // LOG_EVERY:
                    log.info("thumbnails: %d moved into the media store so far (%s at id %d)", self.moved, table,
                             batch[-1][0])
                self._stop.wait(PAUSE_S)
            if self.moved > start:
                log.info("thumbnails of %s: %d moved into the media store", table, self.moved - start)
        return self.moved - before

    def _any(self, table: str) -> bool:
        """Whether any row of the table still holds a thumbnail to move.

        Once everything moved, every start asks this: one sequential read of the table's heap (IS NOT NULL
        reads the row's null bitmap, never the TOAST table), instead of a walk by id through the index.
        """

        def work(cur: cursor) -> bool:
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE thumbnail IS NOT NULL AND sha256 IS NOT NULL "
                        "AND id > %s)", (self._after.get(table, 0),))
            return bool(one_row(cur)[0])

        return run_tx(self.repo.pool, work, None)  # unbounded: a read of the whole heap, off every hot path

    def _pending(self, table: str) -> list[tuple[int, str, int]]:
        """The next rows whose column holds a thumbnail: (id, sha256, bytes), at most BATCH_BYTES together."""
        after = self._after.get(table, 0)

        def work(cur: cursor) -> list[tuple[int, str, int]]:
            # octet_length of an uncompressed (STORAGE EXTERNAL) value reads its TOAST pointer, not its bytes.
            cur.execute(f"SELECT id, sha256, octet_length(thumbnail) FROM {table} WHERE id > %s "
                        "AND thumbnail IS NOT NULL AND sha256 IS NOT NULL ORDER BY id LIMIT %s", (after, BATCH_ROWS))
            return [(int(i), str(s), int(n)) for i, s, n in cur.fetchall()]

        out: list[tuple[int, str, int]] = []
        total = 0
        for row in run_tx(self.repo.pool, work, TX_TIMEOUT_S):
            if out and total + row[2] > BATCH_BYTES:
                break
            out.append(row)
            total += row[2]
        return out

    def _move(self, table: str, batch: list[tuple[int, str, int]]) -> int:
        ids = [row_id for row_id, _, _ in batch]

        def read(cur: cursor) -> list[tuple[int, str, bytes]]:
            cur.execute(f"SELECT id, sha256, thumbnail FROM {table} WHERE id = ANY(%s) AND thumbnail IS NOT NULL "
                        "AND sha256 IS NOT NULL", (ids,))
            return [(int(i), str(s), bytes(b)) for i, s, b in cur.fetchall()]

        rows = run_tx(self.repo.pool, read, TX_TIMEOUT_S)
        writes: dict[str, tuple[Path, bytes]] = {}
        present = []
        for _, sha, data in rows:
            target = thumbnails.path(self.media, sha)
            if target.exists():
                present.append(target)  # kept: the first thumbnail of a picture stays
            elif data and sha not in writes:
                writes[sha] = (target, data)
        self.media.put_paths(list(writes.values()))
        if present:
            self.media.sync(present)  # one a reader remade is renamed into place but its folder not flushed yet
        # Durable now; an empty column (an item upserted without a thumbnail) had nothing to keep.
        cleared = [row_id for row_id, _, _ in rows]

        def clear(cur: cursor) -> int:
            cur.execute(f"UPDATE {table} SET thumbnail = NULL WHERE id = ANY(%s) AND thumbnail IS NOT NULL",
                        (cleared,))
            return int(cur.rowcount)

        done = run_tx(self.repo.pool, clear, TX_TIMEOUT_S) if cleared else 0
        empty = sum(1 for _, _, data in rows if not data)
        THUMBNAILS_MOVED.labels("moved").inc(max(0, done - empty))
        THUMBNAILS_MOVED.labels("empty").inc(empty)
        return done


def start_mover(config: Config, repo: Repository, media: MediaStore) -> ThumbnailMover | None:
    """A started mover (it waits for the migrations before its first query), or None when turned off."""
    if not config.move_thumbnails:
        log.info("thumbnails stay where they are (INDEX_MOVE_THUMBNAILS=false)")
        return None
    mover = ThumbnailMover(config, repo, media)
    mover.start()
    return mover
