"""The SQL of folder syncs: which file (source, path) shows which image, and which images a sync owns.

Rows stay unique per sha256 in a collection, so two files with the same bytes are two records of one
image. `files` (migration 7) holds every recorded path with the size and mtime the loader compares to
skip unchanged files; `synced_images` marks the images a sync stored first (or took over, see
`_take_over`): only those are deleted when no recorded file shows them any more. Uploads and other
loads are never deleted by a sync.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from psycopg2.extensions import cursor

from index_service.catalog import Coll
from index_service.domain import NewImage, UpsertOutcome
from index_service.shas import lock_keys

Deleter = Callable[[cursor, list[str], Callable[[], list[tuple[int, str | None]]]], list[int]]


@dataclass(frozen=True)
class FileRecord:
    """A recorded file and the image it shows (sha256 '' and id 0 when that image was deleted since)."""

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    image_id: int


@dataclass(frozen=True)
class FileLink:
    """A file to record for content the collection holds."""

    path: str
    sha256: str
    size_bytes: int
    mtime_ns: int


def list_files(cur: cursor, c: Coll, source: str, after: str, limit: int) -> list[FileRecord]:
    """Records of `source` with paths after `after`, ascending."""
    cur.execute(
        f"SELECT f.path, f.size_bytes, f.mtime_ns, coalesce(t.sha256, ''), coalesce(t.id, 0) FROM files f "
        f"LEFT JOIN {c.table} t ON t.id = f.image_id WHERE f.collection = %s AND f.source = %s AND f.path > %s "
        "ORDER BY f.path LIMIT %s",
        (c.name, source, after, limit),
    )
    return [FileRecord(*row) for row in cur.fetchall()]


def link(cur: cursor, c: Coll, source: str, links: Sequence[FileLink]) -> list[int]:
    """Record the links whose sha256 the collection holds; the image id of each (0: not held, not recorded)."""
    shas = sorted({f.sha256 for f in links})
    lock_keys(cur, shas)  # a concurrent RemoveFiles cannot delete an image between this lookup and the record
    cur.execute(f"SELECT sha256, id FROM {c.table} WHERE sha256 = ANY(%s)", (shas,))
    held: dict[str, int] = dict(cur.fetchall())
    rows = [(f.path, held[f.sha256], f.size_bytes, f.mtime_ns) for f in links if f.sha256 in held]
    _put(cur, c, source, rows)
    _take_over(cur, c, source, rows)
    return [held.get(f.sha256, 0) for f in links]


def record_upserted(cur: cursor, c: Coll, items: Sequence[NewImage], out: dict[str, UpsertOutcome]) -> None:
    """Record the files of an upsert's record_file items in its transaction; a sync owns the rows it created."""
    by_source: dict[str, list[tuple[str, int, int, int]]] = {}
    created: dict[str, list[int]] = {}
    for i in items:
        result = out.get(i.sha256)
        if not i.record_file or result is None or result.error is not None:
            continue
        by_source.setdefault(i.source, []).append((i.file_name, result.id, len(i.original), i.file_mtime_ns))
        if result.created:
            created.setdefault(i.source, []).append(result.id)
    for source, rows in by_source.items():
        _put(cur, c, source, rows)
        cur.execute("INSERT INTO synced_images (collection, image_id, source) SELECT %s, unnest(%s::bigint[]), %s "
                    "ON CONFLICT DO NOTHING", (c.name, created.get(source, []), source))
        _take_over(cur, c, source, rows)


def remove(cur: cursor, c: Coll, source: str, paths: Sequence[str], delete: Deleter) -> tuple[int, list[int]]:
    """Forget `paths` of `source`, then delete the owned images no file shows (through the repository's
    delete path: per-sha locks, originals after commit). Returns (records removed, image ids deleted)."""
    cur.execute("SELECT image_id FROM files WHERE collection = %s AND source = %s AND path = ANY(%s) FOR UPDATE",
                (c.name, source, list(paths)))
    candidates = {r[0] for r in cur.fetchall()}
    # Images this source owns that lost their last file earlier (a sync killed between its steps).
    cur.execute("SELECT s.image_id FROM synced_images s WHERE s.collection = %s AND s.source = %s AND NOT EXISTS "
                "(SELECT 1 FROM files f WHERE f.collection = s.collection AND f.image_id = s.image_id)",
                (c.name, source))
    candidates.update(r[0] for r in cur.fetchall())
    cur.execute(f"SELECT sha256 FROM {c.table} WHERE id = ANY(%s) AND sha256 IS NOT NULL", (sorted(candidates),))
    shas = [r[0] for r in cur.fetchall()]
    removed = [0]

    def change() -> list[tuple[int, str | None]]:
        cur.execute("DELETE FROM files WHERE collection = %s AND source = %s AND path = ANY(%s)",
                    (c.name, source, list(paths)))
        removed[0] = cur.rowcount
        _rename(cur, c, source, sorted(candidates))
        # Owned by any sync (another source may have stored it first) and shown by no file of any source.
        cur.execute(
            f"DELETE FROM {c.table} t USING synced_images s WHERE s.collection = %s AND s.image_id = t.id "
            "AND t.id = ANY(%s) AND NOT EXISTS (SELECT 1 FROM files f WHERE f.collection = %s AND f.image_id = t.id) "
            "RETURNING t.id, t.sha256",
            (c.name, sorted(candidates), c.name))
        deleted: list[tuple[int, str | None]] = cur.fetchall()
        forget_images(cur, c, [row_id for row_id, _ in deleted])
        return deleted

    deleted_ids = delete(cur, shas, change)
    return removed[0], deleted_ids


def forget_images(cur: cursor, c: Coll, ids: list[int]) -> None:
    """Drop the records of deleted images (the files that showed them count as new at the next sync)."""
    if ids:
        cur.execute("DELETE FROM files WHERE collection = %s AND image_id = ANY(%s)", (c.name, ids))
        cur.execute("DELETE FROM synced_images WHERE collection = %s AND image_id = ANY(%s)", (c.name, ids))


def _put(cur: cursor, c: Coll, source: str, rows: list[tuple[str, int, int, int]]) -> None:
    """Insert or replace records (path, image id, size, mtime)."""
    if not rows:
        return
    paths, ids, sizes, mtimes = (list(col) for col in zip(*rows, strict=True))
    cur.execute("SELECT image_id FROM files WHERE collection = %s AND source = %s AND path = ANY(%s)",
                (c.name, source, paths))
    before = sorted({r[0] for r in cur.fetchall()} - set(ids))
    cur.execute(
        "INSERT INTO files (collection, source, path, image_id, size_bytes, mtime_ns) "
        "SELECT %s, %s, * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[]) "
        "ON CONFLICT (collection, source, path) DO UPDATE SET image_id = excluded.image_id, "
        "size_bytes = excluded.size_bytes, mtime_ns = excluded.mtime_ns",
        (c.name, source, paths, ids, sizes, mtimes))
    _rename(cur, c, source, before)


def _rename(cur: cursor, c: Coll, source: str, ids: list[int]) -> None:
    """Rows of this source whose file_name is no longer one of their files take another of their paths
    (a renamed or moved file's row shows where the file is now)."""
    if ids:
        cur.execute(
            f"UPDATE {c.table} t SET file_name = f.path FROM (SELECT image_id, min(path) AS path FROM files "
            "WHERE collection = %s AND source = %s AND image_id = ANY(%s) GROUP BY image_id) f "
            "WHERE t.id = f.image_id AND t.source = %s AND NOT EXISTS (SELECT 1 FROM files g WHERE "
            "g.collection = %s AND g.source = %s AND g.image_id = t.id AND g.path = t.file_name)",
            (c.name, source, ids, source, c.name, source))


def _take_over(cur: cursor, c: Coll, source: str, rows: list[tuple[str, int, int, int]]) -> None:
    """A row that `loader dir` stored from this very file (same source and relative path) becomes the sync's:
    switching a folder from `dir` to `sync` then removes deleted files' rows too."""
    if not rows:
        return
    cur.execute(
        f"INSERT INTO synced_images (collection, image_id, source) SELECT %s, t.id, %s FROM {c.table} t "
        "JOIN unnest(%s::text[], %s::bigint[]) AS u(path, id) ON t.id = u.id "
        "WHERE t.source = %s AND t.file_name = u.path ON CONFLICT DO NOTHING",
        (c.name, source, [r[0] for r in rows], [r[1] for r in rows], source))
