"""Versioned schema migrations, recorded in `index_migrations` and applied at start under a lock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from psycopg2.extensions import connection, cursor

from index_service import tag_counts
from index_service.dialects import Dialect, DialectError, choose_backend, dialect_for
from index_service.pool import one_row

log = logging.getLogger(__name__)

TABLE = "images"
PROTOTYPE_TABLE = "image_table"
INDEX = "images_v_hnsw"
ID_SEQUENCE = "image_ids"
FIRST_COLLECTION = "c1"  # the name the pre-collections table takes
DEFAULT_ALIAS = "default"
LOCK_KEY = 0x1DE5_5E4C  # pg_advisory_lock key: one migrator at a time across services

# Columns every image row has beyond the prototype's (v, location, id).
COLUMNS = """
    sha256 text UNIQUE,
    label text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT '',
    file_name text NOT NULL DEFAULT '',
    content_type text NOT NULL DEFAULT '',
    width integer NOT NULL DEFAULT 0,
    height integer NOT NULL DEFAULT 0,
    size_bytes bigint NOT NULL DEFAULT 0,
    model_id text NOT NULL DEFAULT 'unknown',
    thumbnail bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    taken_at bigint,
    taken_offset_minutes smallint,
    camera_make text NOT NULL DEFAULT '',
    camera_model text NOT NULL DEFAULT '',
    latitude double precision,
    longitude double precision,
    file_mtime_ns bigint NOT NULL DEFAULT 0,
    tags text[] NOT NULL DEFAULT '{}'
"""
# The columns migration 6 added (photo facts and tags), as `name type…` lines of COLUMNS.
PHOTO_COLUMNS = ("taken_at", "taken_offset_minutes", "camera_make", "camera_model", "latitude", "longitude",
                 "file_mtime_ns", "tags")


def photo_indexes(table: str) -> list[str]:
    """Indexes behind the tag filters (GIN: && and @>) and date filters and sorts (B-tree on taken_at)."""
    return [f"CREATE INDEX IF NOT EXISTS {table}_tags ON {table} USING gin (tags)",
            f"CREATE INDEX IF NOT EXISTS {table}_taken_at ON {table} (taken_at)"]


@dataclass(frozen=True)
class Context:
    """What migrations need to know: the backend asked for and the dimension of a new collection."""

    backend: str
    dim: int


@dataclass(frozen=True)
class Collection:
    """The collection as migrated: its backend's dialect and dimension."""

    dialect: Dialect
    dim: int


def _meta(cur: cursor, key: str) -> str | None:
    cur.execute("SELECT value FROM index_meta WHERE key = %s", (key,))
    row = cur.fetchone()
    return row[0] if row else None


def _set_meta(cur: cursor, key: str, value: str) -> None:
    cur.execute(
        "INSERT INTO index_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _table_exists(cur: cursor, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    return bool(one_row(cur)[0])


def m1_meta(cur: cursor, ctx: Context) -> None:
    """Key/value metadata of the collection (backend, dim, model_id)."""
    cur.execute("CREATE TABLE IF NOT EXISTS index_meta (key text PRIMARY KEY, value text NOT NULL)")


def m2_extension(cur: cursor, ctx: Context) -> None:
    """Pick the backend (auto: lantern when available) and install its extension."""
    cur.execute("SELECT name FROM pg_available_extensions WHERE name IN ('lantern', 'vector')")
    available = {row[0] for row in cur.fetchall()}
    backend = choose_backend(ctx.backend, _meta(cur, "backend"), available)
    cur.execute(f"CREATE EXTENSION IF NOT EXISTS {dialect_for(backend).extension}")
    _set_meta(cur, "backend", backend)


def m3_images(cur: cursor, ctx: Context) -> None:
    """The images table: new, or the prototype's `image_table` adopted in place."""
    dialect = dialect_for(_meta(cur, "backend") or "pgvector")
    if _table_exists(cur, TABLE):
        return
    if _table_exists(cur, PROTOTYPE_TABLE):
        _adopt_prototype(cur, dialect, ctx.dim)
        return
    cur.execute(
        f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, v {dialect.column_type(ctx.dim)}, "
        f"original_ref text, {COLUMNS})"
    )
    cur.execute(f"ALTER TABLE {TABLE} ALTER COLUMN model_id DROP DEFAULT")
    _set_meta(cur, "dim", str(ctx.dim))


def _adopt_prototype(cur: cursor, dialect: Dialect, default_dim: int) -> None:
    cur.execute(f"SELECT array_length(v, 1) FROM {PROTOTYPE_TABLE} WHERE v IS NOT NULL LIMIT 1")
    row = cur.fetchone()
    dim = int(row[0]) if row and row[0] else default_dim
    log.info("adopting the prototype table %s (dim %d) as %s", PROTOTYPE_TABLE, dim, TABLE)
    cur.execute(f"ALTER TABLE {PROTOTYPE_TABLE} RENAME TO {TABLE}")
    cur.execute(f"ALTER TABLE {TABLE} RENAME COLUMN location TO original_ref")
    cur.execute(f"ALTER TABLE {TABLE} " + ", ".join(f"ADD COLUMN {c.strip()}" for c in _columns()))
    # The prototype stored paths of the machine that loaded them; keep the last part as the file name.
    cur.execute(f"UPDATE {TABLE} SET file_name = regexp_replace(coalesce(original_ref, ''), '^.*[/\\\\]', '')")
    cur.execute(f"ALTER TABLE {TABLE} ALTER COLUMN model_id DROP DEFAULT")
    for statement in dialect.adopt_column(TABLE, dim):
        cur.execute(statement)
    _adopt_prototype_index(cur, dialect)
    _set_meta(cur, "dim", str(dim))
    _set_meta(cur, "adopted_rows", "true")


def _adopt_prototype_index(cur: cursor, dialect: Dialect) -> None:
    """Keep a prototype lantern_hnsw cosine index under our name; drop one we cannot use."""
    cur.execute(
        "SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = %s::regclass AND a.amname = 'lantern_hnsw'",
        (TABLE,),
    )
    for name, definition in cur.fetchall():
        if dialect.name == "lantern" and dialect.opclass in definition:
            cur.execute(f'ALTER INDEX "{name}" RENAME TO {INDEX}')
        else:
            log.warning("dropping the prototype index %s (not a cosine index): %s", name, definition)
            cur.execute(f'DROP INDEX "{name}"')


def _columns() -> list[str]:
    return [c for c in COLUMNS.split(",\n") if c.strip()]


def m4_filters(cur: cursor, ctx: Context) -> None:
    """B-tree indexes behind label and source filters (exact fallbacks of selective filters use them)."""
    cur.execute(f"CREATE INDEX IF NOT EXISTS images_label ON {TABLE} (label)")
    cur.execute(f"CREATE INDEX IF NOT EXISTS images_source ON {TABLE} (source)")
    # Thumbnails are already-compressed images: skip pglz's attempt to compress them.
    cur.execute(f"ALTER TABLE {TABLE} ALTER COLUMN thumbnail SET STORAGE EXTERNAL")


def m5_collections(cur: cursor, ctx: Context) -> None:
    """Named collections and aliases; the existing table becomes collection `c1` behind alias `default`."""
    cur.execute(
        "CREATE TABLE collections (name text PRIMARY KEY, table_name text NOT NULL UNIQUE, model_id text, "
        "dim integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    )
    cur.execute("CREATE TABLE aliases (alias text PRIMARY KEY, collection text NOT NULL REFERENCES collections)")
    # One id sequence for every collection: an id names one image everywhere, so a re-embedded image
    # keeps its id and the gateway's links survive an alias move.
    cur.execute(f"CREATE SEQUENCE {ID_SEQUENCE}")
    cur.execute(f"SELECT pg_get_serial_sequence('{TABLE}', 'id')")
    serial = one_row(cur)[0]
    last = f"(SELECT last_value FROM {serial})" if serial else "0"
    cur.execute(f"SELECT setval('{ID_SEQUENCE}', greatest((SELECT max(id) FROM {TABLE}), {last}, 1))")
    cur.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id SET DEFAULT nextval('{ID_SEQUENCE}')")
    # The prototype's serial ids are int4; every collection's ids come from one bigint sequence (and
    # upserts COPY them in binary, which needs the exact type). Rewrites an adopted table once.
    cur.execute(f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{TABLE}'::regclass "
                "AND attname = 'id'")
    if one_row(cur)[0] != "bigint":
        cur.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id TYPE bigint")
    cur.execute(
        "INSERT INTO collections (name, table_name, model_id, dim) VALUES (%s, %s, %s, %s)",
        (FIRST_COLLECTION, TABLE, _meta(cur, "model_id"), int(_meta(cur, "dim") or ctx.dim)),
    )
    cur.execute("INSERT INTO aliases (alias, collection) VALUES (%s, %s)", (DEFAULT_ALIAS, FIRST_COLLECTION))


def m6_photos(cur: cursor, ctx: Context) -> None:
    """Photo facts and tags on every collection's table; each row's label becomes its first tag."""
    wanted = [c.strip() for c in _columns() if c.split()[0] in PHOTO_COLUMNS]
    for table in _collection_tables(cur):
        # Columns with constant defaults are added without rewriting the table (Postgres 11+).
        cur.execute(f"ALTER TABLE {table} " + ", ".join(f"ADD COLUMN IF NOT EXISTS {c}" for c in wanted))
        cur.execute(f"UPDATE {table} SET tags = ARRAY[left(btrim(label), 100)] "
                    "WHERE btrim(label) <> '' AND tags = '{}'")
        for statement in photo_indexes(table):
            cur.execute(statement)


def _collection_tables(cur: cursor) -> list[str]:
    cur.execute("SELECT table_name FROM collections ORDER BY name")
    return [r[0] for r in cur.fetchall()]


def m7_files(cur: cursor, ctx: Context) -> None:
    """Folder syncs' records (index_service.files): each file (source, path) and the image it shows; the
    images a sync stored. Paths compare byte-wise (COLLATE "C"): the loader pages by path in that order."""
    cur.execute(
        "CREATE TABLE files (collection text NOT NULL REFERENCES collections ON DELETE CASCADE, "
        'source text NOT NULL, path text COLLATE "C" NOT NULL, image_id bigint NOT NULL, '
        "size_bytes bigint NOT NULL, mtime_ns bigint NOT NULL, PRIMARY KEY (collection, source, path))")
    cur.execute("CREATE INDEX files_image ON files (collection, image_id)")
    cur.execute(
        "CREATE TABLE synced_images (collection text NOT NULL REFERENCES collections ON DELETE CASCADE, "
        "image_id bigint NOT NULL, source text NOT NULL, PRIMARY KEY (collection, image_id))")
    cur.execute("CREATE INDEX synced_images_source ON synced_images (collection, source)")


def m11_vector_types(cur: cursor, ctx: Context) -> None:
    """Each collection records how it stores vectors: float32 (every existing one) or float16."""
    cur.execute("ALTER TABLE collections ADD COLUMN vector_type text NOT NULL DEFAULT 'float32'")


def m13_tag_counts(cur: cursor, ctx: Context) -> None:
    """Tag counts kept by triggers (index_service.tag_counts), filled from every collection's rows."""
    tag_counts.create_storage(cur)
    cur.execute("SELECT name, table_name FROM collections ORDER BY name")
    for name, table in cur.fetchall():
        tag_counts.install(cur, name, table)  # first: its lock keeps writers out until the fill commits
        tag_counts.fill(cur, name, table)


def vectors_in_row(table: str) -> str:
    """Keep rows whole up to a page rather than Postgres' default of 2 KB: a 512-d float32 vector alone is
    2 KB, so by default every row went to TOAST (the vector, or with it kept, the sha256 and file name),
    and every exact scan, recall check and index build read vectors through the TOAST index one random
    page at a time (a 1,000,000-row build slowed to 80 rows/s). Only rows over a page move values out."""
    return f"ALTER TABLE {table} SET (toast_tuple_target = 8160)"


def m14_vectors_in_row(cur: cursor, ctx: Context) -> None:
    """Vectors kept in their rows (vectors_in_row); rows already stored move when next rewritten."""
    cur.execute("SELECT table_name FROM collections ORDER BY name")
    for (table,) in cur.fetchall():
        cur.execute(vectors_in_row(table))


def unindexed_rows(table: str) -> list[str]:
    """Rows the graph has not taken in yet: pgvector's HNSW index leaves them out (`WHERE NOT unindexed`),
    searches scan them exactly beside the graph, and index_service.merger hands them to the graph later.
    An upsert into a graph costs pgvector 2-4 ms a row on two cores; this way it costs what an upsert into
    an empty collection costs, up to INDEX_UNINDEXED_MAX_ROWS rows at a time (issue 14)."""
    return [f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS unindexed boolean NOT NULL DEFAULT false",
            f"CREATE INDEX IF NOT EXISTS {table}_unindexed ON {table} (id) WHERE unindexed"]


def m15_search_breadths(cur: cursor, ctx: Context) -> None:
    """Each collection's search breadth and last recall estimate, kept across restarts (index_service.recall)."""
    cur.execute("""CREATE TABLE search_breadths (
        collection text PRIMARY KEY REFERENCES collections ON DELETE CASCADE,
        ef integer NOT NULL,
        rows bigint,                 -- the rows the breadth was last guessed for
        recall double precision,     -- the last estimate, if any: mean recall@K ...
        stderr double precision,     -- ... its standard error,
        queries integer,             -- ... over this many sampled vectors,
        measured_ef integer,         -- ... at this breadth,
        measured_rows bigint,        -- ... and this many rows,
        measured_at timestamptz,
        measured_seconds double precision)""")


def m16_missed_breadths(cur: cursor, ctx: Context) -> None:
    """The widest breadth that missed the target, so a restarted keeper does not narrow back to it."""
    cur.execute("ALTER TABLE search_breadths ADD COLUMN missed_ef integer NOT NULL DEFAULT 0")


def m17_unindexed_rows(cur: cursor, ctx: Context) -> None:
    """The unindexed flag of every collection's rows (unindexed_rows). Existing indexes hold every row and
    stay as they are: upserts mark rows unindexed only in a collection whose index leaves them out."""
    for table in _collection_tables(cur):
        for statement in unindexed_rows(table):
            cur.execute(statement)


MIGRATIONS: list[tuple[int, str, Callable[[cursor, Context], None]]] = [
    (1, "metadata table", m1_meta),
    (2, "vector extension", m2_extension),
    (3, "images table (adopts the prototype's image_table)", m3_images),
    (4, "filter indexes", m4_filters),
    (5, "collections and aliases", m5_collections),
    (6, "photo facts and tags", m6_photos),
    (7, "files of folder syncs", m7_files),
    (11, "vector types of collections", m11_vector_types),
    (13, "tag counts kept by triggers", m13_tag_counts),
    (14, "vectors kept in their rows", m14_vectors_in_row),
    (15, "search breadths kept across restarts", m15_search_breadths),
    (16, "missed search breadths kept across restarts", m16_missed_breadths),
    (17, "rows the graph has not taken in yet", m17_unindexed_rows),
]


def migrate(conn: connection, ctx: Context) -> Collection:
    """Apply pending migrations, each in its own transaction; returns the collection's shape."""
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        conn.commit()
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS index_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cur.execute("SELECT version FROM index_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, name, step in MIGRATIONS:
                if version in done:
                    continue
                step(cur, ctx)
                cur.execute("INSERT INTO index_migrations (version, name) VALUES (%s, %s)", (version, name))
                conn.commit()
                log.info("applied migration %d: %s", version, name)
            backend = _meta(cur, "backend") or ""
            if ctx.backend not in ("auto", backend):
                raise DialectError(f"INDEX_BACKEND={ctx.backend} but the collection was created with {backend}")
            collection = Collection(dialect_for(backend), int(_meta(cur, "dim") or 0))
            conn.commit()
            return collection
        except BaseException:
            conn.rollback()
            raise
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            conn.commit()
