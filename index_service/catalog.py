"""The SQL of collections and aliases: resolve a name, create, drop, list, move an alias."""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg2.extensions import cursor

from index_service import sizes, tag_counts
from index_service.dialects import Dialect
from index_service.domain import InvalidArgument, Mismatch, NotFound
from index_service.migrations import COLUMNS, DEFAULT_ALIAS, ID_SEQUENCE, photo_indexes, unindexed_rows, vectors_in_row
from index_service.pool import one_row
from semsearch_common.errors import FailedPrecondition, Reason, ServiceError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")  # also a safe part of a table name: no quoting needed
VECTOR_TYPES = ("float32", "float16")  # how a collection stores its vectors (float16: half the bytes)


class AlreadyExists(ServiceError):
    """A collection or alias name that is taken (ALREADY_EXISTS)."""

    code = "ALREADY_EXISTS"
    reason = Reason.NAME_TAKEN


@dataclass(frozen=True)
class Coll:
    """A resolved collection: its name, table, vector shape and model (None until the first upsert)."""

    name: str
    table: str
    dim: int
    model_id: str | None
    vector_type: str = "float32"

    @property
    def half(self) -> bool:
        """Whether vectors are stored (pgvector: halfvec) or indexed (Lantern: quant_bits=16) at half size."""
        return self.vector_type == "float16"

    @property
    def index(self) -> str:
        """Its HNSW index (the first collection's is the pre-collections `images_v_hnsw`)."""
        return f"{self.table}_v_hnsw"


@dataclass(frozen=True)
class CollInfo:
    """A collection as ListCollections describes it."""

    coll: Coll
    count: int
    created_at: int
    aliases: tuple[str, ...]


def check_name(what: str, name: str) -> str:
    """Raise unless `name` is a valid collection or alias name."""
    if not NAME_RE.match(name):
        raise InvalidArgument(f"{what} {name!r} must be a lower-case letter, then up to 39 lower-case letters, "
                              "digits or underscores")
    return name


def resolve(cur: cursor, name: str) -> Coll:
    """The collection an alias points at, or the collection of that name; empty means the default alias."""
    name = name or DEFAULT_ALIAS
    cur.execute(
        "SELECT name, table_name, dim, model_id, vector_type FROM collections "
        "WHERE name = coalesce((SELECT collection FROM aliases WHERE alias = %s), %s)",
        (name, name),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no collection or alias named {name!r}")
    return Coll(row[0], row[1], int(row[2]), row[3], row[4])


def tables(cur: cursor) -> list[str]:
    """The tables of every collection (originals are shared across them by sha256)."""
    cur.execute("SELECT table_name FROM collections ORDER BY name")
    return [r[0] for r in cur.fetchall()]


def names(cur: cursor) -> list[str]:
    """Every collection's name."""
    cur.execute("SELECT name FROM collections ORDER BY name")
    return [r[0] for r in cur.fetchall()]


def claim_model(cur: cursor, coll: Coll, model_id: str) -> str:
    """The collection's model; the first upsert of a collection without one records its own."""
    if coll.model_id is not None:
        return coll.model_id
    cur.execute("UPDATE collections SET model_id = %s WHERE name = %s AND model_id IS NULL", (model_id, coll.name))
    cur.execute("SELECT model_id FROM collections WHERE name = %s", (coll.name,))
    return str(one_row(cur)[0])


def check_model(coll: Coll, model_id: str, dim: int) -> None:
    """Refuse a query vector of another model or dimension than the collection's."""
    if dim != coll.dim:
        raise Mismatch(f"the query has {dim} dimensions, collection {coll.name!r} has {coll.dim}",
                       reason=Reason.DIMENSION_MISMATCH)
    if model_id and coll.model_id is not None and model_id != coll.model_id:
        raise Mismatch(f"collection {coll.name!r} holds model {coll.model_id!r}, the query comes from {model_id!r}")


def create(cur: cursor, dialect: Dialect, name: str, model_id: str, dim: int,
           vector_type: str = "float32") -> Coll:
    """A new empty collection: its table (ids from the shared sequence), filter indexes and tag-count triggers."""
    check_name("collection", name)
    if vector_type not in VECTOR_TYPES:
        raise InvalidArgument(f"vector_type {vector_type!r} must be one of {', '.join(VECTOR_TYPES)}")
    half = vector_type == "float16"
    cur.execute("SELECT 1 FROM collections WHERE name = %s UNION ALL SELECT 1 FROM aliases WHERE alias = %s",
                (name, name))
    if cur.fetchone():
        raise AlreadyExists(f"the name {name!r} is taken by a collection or an alias")
    table = f"images_{name}"
    cur.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY DEFAULT nextval('{ID_SEQUENCE}'), "
        f"v {dialect.column_type(dim, half)}, original_ref text, {COLUMNS})"
    )
    cur.execute(f"ALTER TABLE {table} ALTER COLUMN model_id DROP DEFAULT")
    cur.execute(f"ALTER TABLE {table} ALTER COLUMN thumbnail SET STORAGE EXTERNAL")
    cur.execute(vectors_in_row(table))
    cur.execute(f"CREATE INDEX {table}_label ON {table} (label)")
    cur.execute(f"CREATE INDEX {table}_source ON {table} (source)")
    for statement in photo_indexes(table) + unindexed_rows(table):
        cur.execute(statement)
    tag_counts.install(cur, name, table)
    cur.execute("INSERT INTO collections (name, table_name, model_id, dim, vector_type) VALUES (%s, %s, %s, %s, %s)",
                (name, table, model_id, dim, vector_type))
    return Coll(name, table, dim, model_id, vector_type)


def drop(cur: cursor, name: str) -> int:
    """Drop a collection no alias points at; returns its row count."""
    cur.execute("SELECT table_name FROM collections WHERE name = %s FOR UPDATE", (name,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no collection named {name!r}")
    cur.execute("SELECT alias FROM aliases WHERE collection = %s ORDER BY alias", (name,))
    aliases = [r[0] for r in cur.fetchall()]
    if aliases:
        raise FailedPrecondition(f"collection {name!r} is still the target of alias(es) {', '.join(aliases)}; "
                                 "move them first", reason=Reason.COLLECTION_IN_USE)
    cur.execute(f"SELECT count(*) FROM {row[0]}")
    count = int(one_row(cur)[0])
    cur.execute("DELETE FROM collections WHERE name = %s", (name,))
    cur.execute(f"DROP TABLE {row[0]}")
    tag_counts.forget(cur, name)
    return count


def set_alias(cur: cursor, alias: str, collection: str, expected: str) -> str:
    """Point `alias` at `collection` (one UPDATE: readers see the old or the new target); returns the old one."""
    check_name("alias", alias)
    cur.execute("SELECT 1 FROM collections WHERE name = %s", (alias,))
    if cur.fetchone():
        raise AlreadyExists(f"{alias!r} is a collection's name")
    cur.execute("SELECT 1 FROM collections WHERE name = %s", (collection,))
    if cur.fetchone() is None:
        raise NotFound(f"no collection named {collection!r}")
    cur.execute("SELECT collection FROM aliases WHERE alias = %s FOR UPDATE", (alias,))
    row = cur.fetchone()
    previous = row[0] if row else ""
    if expected and previous != expected:
        raise FailedPrecondition(f"alias {alias!r} points at {previous or 'nothing'!r}, not {expected!r}",
                                 reason=Reason.ALIAS_CHANGED)
    cur.execute("INSERT INTO aliases (alias, collection) VALUES (%s, %s) "
                "ON CONFLICT (alias) DO UPDATE SET collection = excluded.collection", (alias, collection))
    return str(previous)


def list_all(cur: cursor) -> list[CollInfo]:
    """Every collection with its row count and aliases, by name."""
    cur.execute("SELECT name, table_name, dim, model_id, extract(epoch FROM created_at)::bigint, vector_type "
                "FROM collections ORDER BY name")
    rows = cur.fetchall()
    cur.execute("SELECT collection, alias FROM aliases ORDER BY alias")
    aliases: dict[str, list[str]] = {}
    for coll, alias in cur.fetchall():
        aliases.setdefault(coll, []).append(alias)
    out = []
    for name, table, dim, model, created, vector_type in rows:
        coll = Coll(name, table, int(dim), model, vector_type)
        # Exact up to sizes.EXACT_MAX rows, estimated above: the page lists collections on every load.
        out.append(CollInfo(coll, sizes.count(cur, coll), int(created), tuple(aliases.get(name, []))))
    return out
