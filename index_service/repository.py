"""All shared SQL of the index service: upserts, search assembly, metadata, stats, index builds."""

from __future__ import annotations

import dataclasses
import io
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import psycopg2
from psycopg2 import errors
from psycopg2.extensions import connection, cursor

from index_service import (
    builds,
    bulk,
    catalog,
    duplicates,
    files,
    filters,
    merger,
    photo_sql,
    recall,
    sizes,
    thumbnails,
)
from index_service.bulk import BulkLoads
from index_service.catalog import Coll, CollInfo
from index_service.config import Config
from index_service.dialects import Dialect
from index_service.domain import (
    UNKNOWN_MODEL,
    DeadlineExceeded,
    Hit,
    ImageMeta,
    Mismatch,
    NewImage,
    NotFound,
    SearchQuery,
    Unavailable,
    UpsertOutcome,
)
from index_service.media import MediaStore
from index_service.metrics import SEARCH_PLANS
from index_service.migrations import ID_SEQUENCE, Collection, Context, migrate
from index_service.pool import Pool, one_row, run_tx
from index_service.recall import Breadth, RecallKeeper, collections_with_index
from index_service.replica import Reads
from index_service.shas import lock_keys as _lock_keys
from index_service.shas import present as _present
from semsearch_common.errors import Reason

log = logging.getLogger(__name__)

META_COLUMNS = (
    "id, sha256, label, source, file_name, width, height, content_type, size_bytes, model_id, "
    "extract(epoch FROM created_at)::bigint, original_ref, " + photo_sql.COLUMNS
)
# COPY's binary format: signature, flags, header-extension length; then per row a field count and
# length-prefixed fields in the columns' binary forms (text as UTF-8, int4/int8 big-endian, raw bytea).
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_INT2, _INT4, _INT8 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_BOOL = {False: b"\x00", True: b"\x01"}  # a boolean in COPY's binary format
INSERT_COLUMNS = (
    "id, sha256, label, source, file_name, width, height, content_type, size_bytes, model_id, v, "
    + photo_sql.COLUMNS + ", unindexed"
)


class Repository:
    """The index's storage: Postgres through a pool, originals through the media store."""

    def __init__(self, config: Config, dsn: str, media: MediaStore) -> None:
        self.config = config
        self.media = media
        self.thumbs = thumbnails.Thumbnails(media)  # in the media store; the column only in rows from before
        self.pool = Pool(dsn, config.pool_size, config.connect_timeout_s, self._setup)
        self._collection: Collection | None = None
        self.bulk = BulkLoads(self.pool, config.bulk_min_rows, config.bulk_idle_s)
        self.reads = Reads(self.pool, config.read_dsn, config.pool_size, config.connect_timeout_s, self._setup,
                           config.read_retry_s, config.read_max_lag_s)  # searches: on a replica if configured
        self._build_lock = threading.Lock()  # one index build at a time: each may take most of the memory
        # No recall target (INDEX_TARGET_RECALL=0, or INDEX_HNSW_EF alone): the breadth stays where it was set.
        self.breadth = Breadth(config.hnsw.ef, fixed=not config.target_recall)

    # -- lifecycle --------------------------------------------------------------------------------

    def _setup(self, conn: connection) -> None:
        conn.autocommit = True
        with conn.cursor() as cur:
            # JIT compiles a large exact scan for ~100 ms; never worth it for these queries.
            cur.execute("SET jit = off")
            if not self.config.synchronous_commit:
                cur.execute("SET synchronous_commit = off")
            for statement in self.dialect.session_setup() if self._collection else []:
                try:
                    cur.execute(statement)
                except psycopg2.Error as err:  # e.g. LOAD refused to a non-superuser: SET still works
                    log.debug("session setup %r failed: %s", statement, err)
        conn.autocommit = False

    def open(self) -> Collection:
        """Migrate, create the index unless deferred; raises Unavailable while the database is away."""
        try:
            with self.pool.connection(self.config.connect_timeout_s) as (conn, _):
                collection = migrate(conn, Context(self.config.backend, self.config.dim))
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
            raise Unavailable(f"database unavailable: {str(err).strip()}") from None
        self._collection = collection
        self.pool.clear()  # connections made before the dialect was known lack its session setup
        for name, ef, rows, estimate, missed in run_tx(self.pool, recall.load, None):
            self.breadth.restore(name, ef, rows, estimate, missed)  # measured before a restart, or by another replica
        if not self.config.defer_index:
            for name, rows in run_tx(self.pool, lambda cur: bulk.unindexed(cur, _index_state), None):
                if rows <= self.config.stats_exact_max:
                    self.build_index(concurrently=False, timeout_s=None, collection=name)
                else:  # a large build must not hold up SERVING: the background builds it
                    self.bulk.wait_for(name)
        return collection


    @property
    def ready(self) -> bool:
        """Whether migrations ran in this process."""
        return self._collection is not None

    @property
    def dialect(self) -> Dialect:
        """The backend's dialect (after open)."""
        if self._collection is None:
            raise Unavailable("the database is not migrated yet")
        return self._collection.dialect

    @property
    def dim(self) -> int:
        """The vector dimension of the collection the default alias points at now."""
        return self.collection("", 10.0).dim

    def collection(self, name: str, timeout_s: float | None) -> Coll:
        """The collection a name or alias (empty: the default alias) stands for now."""
        return run_tx(self.pool, lambda cur: catalog.resolve(cur, name), timeout_s)

    def collections(self, timeout_s: float | None) -> list[CollInfo]:
        """Every collection with its count and aliases."""
        return run_tx(self.pool, catalog.list_all, timeout_s)

    def create_collection(self, name: str, model_id: str, dim: int, timeout_s: float | None,
                          vector_type: str = "") -> Coll:
        """A new empty collection (its HNSW index is built separately); vector_type empty: the configured one."""
        kind = vector_type or self.config.vector_type
        return run_tx(self.pool, lambda cur: catalog.create(cur, self.dialect, name, model_id, dim, kind), timeout_s)

    def drop_collection(self, name: str, timeout_s: float | None) -> int:
        """Drop a collection no alias uses; its originals go with the next orphan sweep unless shared."""
        count = run_tx(self.pool, lambda cur: catalog.drop(cur, name), timeout_s)
        self.breadth.forget(name)  # its row in search_breadths went with it
        return count

    def set_alias(self, alias: str, collection: str, expected: str, timeout_s: float | None) -> str:
        """Move an alias in one transaction; returns the collection it pointed at before."""
        return run_tx(self.pool, lambda cur: catalog.set_alias(cur, alias, collection, expected), timeout_s)

    def recall_keeper(self) -> RecallKeeper:
        """The background recall estimator of every indexed collection (server.serve starts it)."""
        c = self.config
        return RecallKeeper(self.breadth, lambda: self.dialect, lambda work, t: run_tx(self.pool, work, t),
                            lambda: run_tx(self.pool, collections_with_index, 30.0), c.target_recall,
                            c.recall_queries, c.recall_interval_s, c.recall_budget_s, on_widen=self._widen)

    def _widen(self, c: Coll, ef: int) -> None:
        """Apply a wider breadth that lives in the index itself (Lantern: a concurrent rebuild)."""
        statements = self.dialect.widen(c.index, ef)
        if not statements:
            return
        log.info("rebuilding %s with ef %d for the recall target", c.index, ef)
        with self.pool.connection(None) as (conn, _):
            conn.autocommit = True  # REINDEX CONCURRENTLY cannot run in a transaction block
            try:
                with conn.cursor() as cur:
                    for statement in statements:
                        cur.execute(statement)
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def ping(self, timeout_s: float) -> None:
        """A round trip to the database."""
        run_tx(self.pool, lambda cur: cur.execute("SELECT 1"), timeout_s, attempts=2)

    def close(self) -> None:
        """Close pooled connections."""
        self.pool.clear()
        self.reads.close()

    # -- writes -----------------------------------------------------------------------------------

    def upsert(self, items: Sequence[NewImage], timeout_s: float | None, collection: str = "",
               expected_rows: int = 0) -> list[UpsertOutcome]:
        """Store a batch in one transaction; files are durable before the rows commit."""
        self.bulk.starting(collection, expected_rows, timeout_s)
        unique = {item.sha256: item for item in items}
        ordered = [unique[sha] for sha in sorted(unique)]
        with self.bulk.upserting() as busy:  # a deferred index build waits until upserts pause
            out: dict[str, UpsertOutcome] = run_tx(
                self.pool, lambda cur: self._upsert_tx(cur, ordered, collection, busy), timeout_s)
        return [out[item.sha256] for item in items]

    def _upsert_tx(self, cur: cursor, items: list[NewImage], collection: str,
                   busy: Callable[[str], None]) -> dict[str, UpsertOutcome]:
        c = catalog.resolve(cur, collection)
        busy(c.name)
        model = catalog.claim_model(cur, c, items[0].model_id)
        out = {i.sha256: UpsertOutcome(i.sha256, error=_refusal(i, c, model))
               for i in items if i.model_id != model or len(i.vector) != c.dim}
        items = [i for i in items if i.sha256 not in out]
        if not items:
            return out
        _lock_keys(cur, [i.sha256 for i in items])
        cur.execute(f"SELECT sha256, id FROM {c.table} WHERE sha256 = ANY(%s)", ([i.sha256 for i in items],))
        existing = dict(cur.fetchall())
        refused = photo_sql.merge_existing(cur, c.table, [i for i in items if i.sha256 in existing])
        new = [i for i in items if i.sha256 not in existing]
        self.media.put_paths(thumbnails.missing_files(  # originals and thumbnails, durable
            self.media, ((i.sha256, i.original, i.thumbnail) for i in items)))
        if new:
            ids = self._ids_for(cur, c, [i.sha256 for i in new])
            wait = merger.may_wait(cur, self.dialect, c, len(new), self.config.unindexed_max_rows)
            # COPY straight into the table: every new sha256 is locked by us, so no one else can insert it.
            cur.copy_expert(f"COPY {c.table} ({INSERT_COLUMNS}) FROM STDIN WITH (FORMAT binary)",
                            io.BytesIO(self._copy_rows(new, ids, c.half, wait)))
            out.update({i.sha256: UpsertOutcome(i.sha256, id=ids[i.sha256], created=True) for i in new})
        out.update({sha: UpsertOutcome(sha, id=row_id) if sha not in refused else UpsertOutcome(sha, error=refused[sha])
                    for sha, row_id in existing.items()})
        files.record_upserted(cur, c, items, out)
        return out

    def _ids_for(self, cur: cursor, c: Coll, shas: list[str]) -> dict[str, int]:
        """An id per new sha256: the one another collection gave it, else the next of the shared sequence."""
        others = [t for t in catalog.tables(cur) if t != c.table]
        ids: dict[str, int] = {}
        if others:
            union = " UNION ALL ".join(f"SELECT sha256, id FROM {t} WHERE sha256 = ANY(%(s)s)" for t in others)
            cur.execute(f"SELECT sha256, min(id) FROM ({union}) AS o GROUP BY sha256", {"s": shas})
            ids.update(cur.fetchall())
        fresh = [s for s in shas if s not in ids]
        if fresh:
            cur.execute("SELECT nextval(%s) FROM generate_series(1, %s)", (ID_SEQUENCE, len(fresh)))
            ids.update(zip(fresh, [r[0] for r in cur.fetchall()], strict=True))
        return ids

    def _copy_rows(self, items: list[NewImage], ids: dict[str, int], half: bool = False,
                   unindexed: bool = False) -> bytes:
        """The rows in COPY's binary format: no text formatting of floats; the thumbnail column stays NULL;
        `unindexed`: they wait beside the graph (index_service.merger)."""
        out = [COPY_HEADER]
        for i in items:
            fields = [_INT8.pack(ids[i.sha256]), i.sha256.encode(), i.label.encode(), i.source.encode(),
                      i.file_name.encode(),
                      _INT4.pack(i.width), _INT4.pack(i.height), i.content_type.encode(),
                      _INT8.pack(len(i.original)), i.model_id.encode(),
                      self.dialect.binary(i.vector, half), *photo_sql.copy_fields(i), _BOOL[unindexed]]
            out.append(_INT2.pack(len(fields)))
            for f in fields:
                out += (_INT4.pack(-1),) if f is None else (_INT4.pack(len(f)), f)  # length -1: NULL
        out.append(_INT2.pack(-1))
        return b"".join(out)

    def merge_unindexed(self, batch: int, idle_s: float) -> int:
        """One step of handing waiting rows to their graph (index_service.merger): up to `batch` rows of the
        first collection that has some and whose upserts here have paused `idle_s`; returns how many."""
        if not self.dialect.graph_delta:
            return 0

        def step(name: str) -> Callable[[cursor], int]:
            return lambda cur: merger.merge(cur, catalog.resolve(cur, name), batch)

        for name in run_tx(self.pool, catalog.names, 30.0):
            if not self.bulk.quiet(name, idle_s):
                continue
            try:
                merged = run_tx(self.pool, step(name), 120.0)
            except NotFound:  # dropped meanwhile
                continue
            if merged:
                return merged
        return 0

    def delete(self, ids: Sequence[int], timeout_s: float | None, collection: str = "") -> list[int]:
        """Delete rows, then their files, holding the per-sha locks across both so upserts cannot interleave."""

        def work(cur: cursor) -> list[int]:
            c = catalog.resolve(cur, collection)
            cur.execute(f"SELECT sha256 FROM {c.table} WHERE id = ANY(%s) AND sha256 IS NOT NULL", (list(ids),))
            shas = [row[0] for row in cur.fetchall()]

            def change() -> list[tuple[int, str | None]]:
                cur.execute(f"DELETE FROM {c.table} WHERE id = ANY(%s) RETURNING id, sha256", (list(ids),))
                deleted: list[tuple[int, str | None]] = cur.fetchall()
                files.forget_images(cur, c, [row_id for row_id, _ in deleted])
                return deleted

            return self._delete_locked(cur, shas, change)

        return run_tx(self.pool, work, timeout_s)

    def _delete_locked(self, cur: cursor, shas: list[str],
                       change: Callable[[], list[tuple[int, str | None]]]) -> list[int]:
        """Run `change` (it deletes rows, returning their ids and shas) under session locks on `shas`, commit,
        then delete the originals no collection references; returns the deleted ids."""
        _lock_keys(cur, shas, session=True)
        try:
            deleted = change()
            # A file another collection still references stays (the per-sha locks keep this exact).
            kept = _present(cur, [sha for _, sha in deleted if sha])
            cur.connection.commit()
            for _, sha in deleted:
                if sha and sha not in kept:
                    self.media.delete(sha)
            return sorted(row_id for row_id, _ in deleted)
        finally:
            cur.execute("SELECT pg_advisory_unlock_all()")

    def with_orphans(self, shas: list[str], remove: Callable[[list[str]], None]) -> None:
        """Call `remove` with the shas that have no row, holding their locks (for the media sweep)."""

        def work(cur: cursor) -> None:
            _lock_keys(cur, shas)
            present = _present(cur, shas)
            remove([s for s in shas if s not in present])

        run_tx(self.pool, work, 60.0)

    def link_files(self, source: str, links: Sequence[files.FileLink], timeout_s: float | None,
                   collection: str = "") -> list[int]:
        """Record files whose content the collection holds; the image id of each (0: not held)."""
        return run_tx(self.pool, lambda cur: files.link(cur, catalog.resolve(cur, collection), source, links),
                      timeout_s)

    def remove_files(self, source: str, paths: Sequence[str], timeout_s: float | None,
                     collection: str = "") -> tuple[int, list[int]]:
        """Forget gone files of a source and delete the synced images no file shows; (removed, deleted ids)."""
        return run_tx(self.pool, lambda cur: files.remove(cur, catalog.resolve(cur, collection), source, paths,
                                                          self._delete_locked), timeout_s)

    # -- reads ------------------------------------------------------------------------------------

    def list_files(self, source: str, after: str, limit: int, timeout_s: float | None,
                   collection: str = "") -> list[files.FileRecord]:
        """A page of the files recorded under a source, by path."""
        return run_tx(self.pool, lambda cur: files.list_files(cur, catalog.resolve(cur, collection), source, after,
                                                              limit), timeout_s)

    def search(self, q: SearchQuery, timeout_s: float | None, collection: str = "") -> tuple[list[Hit], float]:
        """Nearest rows by cosine distance; k rows whenever k rows match, filters included."""
        return _counted(*self.reads.run(lambda cur: self._search_on(cur, q, collection), timeout_s))

    def search_similar(self, image_id: int, q: SearchQuery, timeout_s: float | None,
                       collection: str = "") -> tuple[list[Hit], float]:
        """Nearest rows to a stored image's vector, on the connection that looked it up."""

        def work(cur: cursor) -> tuple[list[Hit], float, str]:
            c = catalog.resolve(cur, collection)
            vector = _parse_vector(self._vector_of(cur, c, image_id))
            return self._search_on(cur, dataclasses.replace(q, vector=vector), collection, c)

        return _counted(*self.reads.run(work, timeout_s))

    def _search_on(self, cur: cursor, q: SearchQuery, collection: str,
                   c: Coll | None = None) -> tuple[list[Hit], float, str]:
        started = time.perf_counter()
        # Resolved by this search: an alias moved meanwhile yields the old or the new collection whole,
        # never a mix, since one statement reads one table (a dropped one retries: resolved again).
        c = c or catalog.resolve(cur, collection)
        catalog.check_model(c, q.model_id, len(q.vector))
        # A selective filter is answered exactly: the graph would have to be walked far past the query's
        # neighbourhood to find k matching rows, and its iterative scan gives up first (issue 14).
        cfg = self.config
        matching = filters.matching_rows(cur, c.table, q) if q.filtered and (q.exact or cfg.exact_filter_rows) else None
        if q.exact:
            sizes.check_exact(cur, c, cfg.exact_max_rows, matching)
        selective = (not q.exact and matching is not None and matching <= cfg.exact_filter_rows
                     and matching <= cfg.exact_filter_share * sizes.estimate_rows(cur, c))
        default = (cfg.date_cutoff_gap, cfg.date_cutoff_fraction or None)
        hits, plan = filters.search(cur, self.dialect, c.table, q, self.breadth.ef(c.name), cfg.max_k, default,
                                    c.half, selective)
        return hits, (time.perf_counter() - started) * 1000, plan

    def _vector_of(self, cur: cursor, c: Coll, image_id: int) -> str:
        """The stored vector of an image, in the dialect's text form."""
        row = _fetchone(cur, f"SELECT v::text FROM {c.table} WHERE id = %s", (image_id,))
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        if row[0] is None:
            raise NotFound(f"image {image_id} has no vector")
        return str(row[0])

    def get(self, ids: Sequence[int], timeout_s: float | None, collection: str = "") -> list[ImageMeta]:
        """Metadata of the ids that exist, in the order asked."""

        def work(cur: cursor) -> list[ImageMeta]:
            c = catalog.resolve(cur, collection)
            cur.execute(f"SELECT {META_COLUMNS} FROM {c.table} WHERE id = ANY(%s)", (list(ids),))
            return _metas(cur)

        found = {m.id: m for m in run_tx(self.pool, work, timeout_s)}
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    def page(self, after_id: int, limit: int, timeout_s: float | None, collection: str = "",
             missing_from: str = "", with_bytes: bool = True) -> tuple[list[ImageMeta], Iterator[bytes], list[int]]:
        """Images with ids above `after_id` (of the next `limit`, those `missing_from` lacks), their
        thumbnails (empty unless `with_bytes`; each read as the caller takes it, so a caller that stops at a
        byte budget reads no more), and the ids scanned (none at the end): re-embedding walks a collection so."""

        def work(cur: cursor) -> tuple[list[ImageMeta], list[Any], list[int]]:
            c = catalog.resolve(cur, collection)
            cur.execute(f"SELECT id FROM {c.table} WHERE id > %s ORDER BY id LIMIT %s", (after_id, limit))
            scanned = [r[0] for r in cur.fetchall()]
            if not scanned:
                return [], [], []
            where = ""
            if missing_from:
                target = catalog.resolve(cur, missing_from).table
                where = (f"AND ({c.table}.sha256 IS NULL OR NOT EXISTS "
                         f"(SELECT 1 FROM {target} t WHERE t.sha256 = {c.table}.sha256))")
            column = "thumbnail" if with_bytes else "NULL"  # only rows from before the move hold bytes there
            cur.execute(f"SELECT {META_COLUMNS}, {column} FROM {c.table} WHERE id = ANY(%s) {where} ORDER BY id",
                        (scanned,))
            rows = cur.fetchall()
            return [photo_sql.meta_from_row(row[:-1]) for row in rows], [row[-1] for row in rows], scanned

        metas, columns, scanned = run_tx(self.pool, work, timeout_s)
        thumbs = (self.thumbs.pick(m.sha256, b) or b"" if with_bytes else b""
                  for m, b in zip(metas, columns, strict=True))
        return metas, thumbs, scanned

    def find_duplicates(self, max_distance: float, after_id: int, limit: int, timeout_s: float | None,
                        collection: str = "") -> duplicates.Scan:
        """Near-duplicate groups among the next `limit` images above `after_id` (duplicates.py), with metadata."""

        def work(cur: cursor) -> duplicates.Scan:
            c = catalog.resolve(cur, collection)
            found = duplicates.scan(cur, c, self.dialect, self.breadth.ef(c.name), max_distance, after_id, limit)
            cur.execute(f"SELECT {META_COLUMNS} FROM {c.table} WHERE id = ANY(%s)",
                        ([i for g in found.groups for i in g.ids],))
            return dataclasses.replace(found, metas={m.id: m for m in _metas(cur)})

        return run_tx(self.pool, work, timeout_s)

    def thumbnail(self, image_id: int, timeout_s: float | None, collection: str = "") -> bytes:
        """The thumbnail of an image: its file, its row's old column, or made again from the original."""
        row = run_tx(self.pool, lambda cur: _fetchone(
            cur, f"SELECT sha256, thumbnail FROM {catalog.resolve(cur, collection).table} WHERE id = %s",
            (image_id,)), timeout_s)
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        data = self.thumbs.pick(row[0], row[1], or_original=True)
        if data is None:
            raise NotFound(f"image {image_id} has no thumbnail and its original is not stored")
        return data

    def labels(self, timeout_s: float | None, collection: str = "") -> list[tuple[str, int]]:
        """Every label with its count (labels are tags now: photo_sql.label_counts)."""
        return run_tx(self.pool, lambda cur: photo_sql.label_counts(cur, catalog.resolve(cur, collection).name),
                      timeout_s)

    def update_tags(self, ids: Sequence[int], add: tuple[str, ...], remove: tuple[str, ...],
                    timeout_s: float | None, collection: str = "") -> list[int]:
        """Add and remove tags of many images in one transaction; returns the ids that exist."""
        return run_tx(self.pool, lambda cur: photo_sql.update_tags(
            cur, catalog.resolve(cur, collection).table, ids, add, remove), timeout_s)

    def tags(self, timeout_s: float | None, collection: str = "") -> list[tuple[str, int]]:
        """Every tag with its count."""
        return run_tx(self.pool, lambda cur: photo_sql.tag_counts(cur, catalog.resolve(cur, collection).name),
                      timeout_s)

    def exists(self, shas: Sequence[str], timeout_s: float | None, collection: str = "") -> list[str]:
        """The stored subset of `shas`, in the order asked."""
        rows = run_tx(self.pool, lambda cur: _fetchall(
            cur, f"SELECT sha256 FROM {catalog.resolve(cur, collection).table} WHERE sha256 = ANY(%s)",
            (list(shas),)), timeout_s)
        present = {r[0] for r in rows}
        return [s for s in dict.fromkeys(shas) if s in present]

    def stats(self, timeout_s: float | None, collection: str = "") -> dict[str, Any]:
        """Counts, versions, index state and sizes."""
        return run_tx(self.pool, lambda cur: self._stats_tx(cur, collection), timeout_s)

    def _stats_tx(self, cur: cursor, collection: str) -> dict[str, Any]:
        c = catalog.resolve(cur, collection)
        ext = self.dialect.extension
        cur.execute(
            "SELECT (SELECT extversion FROM pg_extension WHERE extname = %s), current_setting('server_version'), "
            "pg_table_size(%s), pg_indexes_size(%s)",
            (ext, c.table, c.table),
        )
        version, pg_version, table_bytes, index_bytes = one_row(cur)
        size = sizes.size(cur, c, self.config.stats_exact_max)  # bounded: no full scan at any size
        params = self.dialect.index_params(self.config.hnsw)
        if not self.config.hnsw.ef_construction:
            params["ef_construction"] = "auto"  # until an index exists and its reloptions say
        params.update(_reloptions(cur, c))
        return {
            "count": size.count, "backend": self.dialect.name, "extension_version": version or "",
            "postgres_version": pg_version, "index_params": params, "index_state": _index_state(cur, c),
            "model_ids": sizes.models(cur, c), "dim": c.dim, "table_bytes": table_bytes, "index_bytes": index_bytes,
            "media_bytes": size.media_bytes, "collection": c.name, "estimated": size.estimated,
            "reads_from_replica": self.reads.on_replica, "vector_type": c.vector_type,
            "unindexed_rows": merger.waiting(cur, c),
            **self._recall_stats(c),
        }

    def _recall_stats(self, c: Coll) -> dict[str, Any]:
        estimate = self.breadth.estimate(c.name)
        out: dict[str, Any] = {"recall_target": self.config.target_recall, "search_breadth": self.breadth.ef(c.name)}
        if estimate is not None:
            out.update(recall_estimate=estimate.recall, recall_queries=estimate.queries,
                       recall_measured_at=int(estimate.at))
        return out

    def build_index(self, concurrently: bool, timeout_s: float | None, collection: str = "") -> tuple[bool, float]:
        """Create the HNSW index if missing (dropping a failed concurrent build); returns (built, seconds)."""
        c = self.collection(collection, timeout_s)
        if not self._build_lock.acquire(timeout=-1 if timeout_s is None else timeout_s):
            raise DeadlineExceeded("another index build kept running past the deadline")
        try:
            result = self._build_index(concurrently, timeout_s, c)
            self.bulk.built(c.name)
            return result
        except errors.QueryCanceled:
            raise DeadlineExceeded("the index build ran out of time") from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
            raise Unavailable(f"database unavailable: {str(err).strip()}") from None
        finally:
            self._build_lock.release()

    def _build_index(self, concurrently: bool, timeout_s: float | None, c: Coll) -> tuple[bool, float]:
        with self.pool.connection(timeout_s) as (conn, _):
            conn.autocommit = True  # CREATE INDEX CONCURRENTLY cannot run in a transaction block
            try:
                with conn.cursor() as cur:
                    state = _index_state(cur, c)
                    if state == "ready":
                        return False, 0.0
                    if state == "invalid":
                        cur.execute(f"DROP INDEX IF EXISTS {c.index}")
                    memory, hnsw = builds.prepare(cur, c, self.config)
                    del conn.notices[:]
                    ms = 0 if timeout_s is None else max(1, int(timeout_s * 1000))
                    cur.execute(f"SET statement_timeout = {ms}")
                    started = time.perf_counter()
                    cur.execute(self.dialect.index_ddl(c.table, c.index, c.dim, hnsw, concurrently, c.half))
                    seconds = time.perf_counter() - started
                    cur.execute("RESET statement_timeout")
                    builds.report_spill(conn, c, memory)
                    log.info("built %s in %.1f s (m %d, ef_construction %d, maintenance_work_mem %s)", c.index,
                             seconds, hnsw.m, hnsw.ef_construction, memory)
                    return True, seconds
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def index_state(self, timeout_s: float | None, collection: str = "") -> str:
        """'ready', 'building', 'missing' (or 'invalid' after a failed concurrent build)."""
        return run_tx(self.pool, lambda cur: _index_state(cur, catalog.resolve(cur, collection)), timeout_s)


def _refusal(item: NewImage, c: Coll, model: str) -> Mismatch:
    if item.model_id != model:
        return Mismatch(f"model {item.model_id!r} differs from collection {c.name!r}'s model {model!r}; use "
                        "another collection or re-embed everything")
    return Mismatch(f"vector has {len(item.vector)} dimensions, collection {c.name!r} has {c.dim}",
                    reason=Reason.DIMENSION_MISMATCH)


def _counted(hits: list[Hit], ms: float, plan: str) -> tuple[list[Hit], float]:
    """Counts a search's plan once its transaction is done (run_tx may run a transaction's work twice)."""
    SEARCH_PLANS.labels(plan).inc()
    return hits, ms


def _metas(cur: cursor) -> list[ImageMeta]:
    return [photo_sql.meta_from_row(row) for row in cur.fetchall()]


def _parse_vector(text: str) -> np.ndarray:
    return np.array([float(x) for x in text.strip("[]{}").split(",")], dtype=np.float32)


def _index_state(cur: cursor, c: Coll) -> str:
    cur.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", (c.index,))
    row = cur.fetchone()
    if row is not None and row[0]:
        return "ready"
    # A plain CREATE INDEX is invisible to other sessions until it commits: ask the progress view.
    cur.execute("SELECT count(*) FROM pg_stat_progress_create_index WHERE relid = to_regclass(%s)", (c.table,))
    if one_row(cur)[0]:
        return "building"
    return "missing" if row is None else "invalid"


def _reloptions(cur: cursor, c: Coll) -> dict[str, str]:
    cur.execute("SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", (c.index,))
    row = cur.fetchone()
    opts = (row[0] if row else None) or []
    return {f"built.{k}": v for k, v in (o.split("=", 1) for o in opts)}


def _fetchone(cur: cursor, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    cur.execute(sql, params)
    return cur.fetchone()


def _fetchall(cur: cursor, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    cur.execute(sql, params)
    return cur.fetchall()


__all__ = ["UNKNOWN_MODEL", "Repository"]
