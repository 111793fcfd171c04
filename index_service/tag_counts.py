"""Tag counts kept by the database: ListTags and ListLabels read a small table instead of scanning images.

Counting `unnest(tags)` over a whole collection took seconds at 1,000,000 rows, on every page load
(issue 14). Instead three statement-level triggers on each collection's table (INSERT, UPDATE, DELETE,
with transition tables; COPY FROM fires them too) append the statement's change per tag to `tag_counts`
in the same transaction as the write: exact after a crash and with any number of service replicas.
The tag "" counts the images without tags (a real tag is never empty: photos.clean_tag).

The table is append-only for writers: a popular tag (or "", with untagged loads) touched by every batch
would otherwise be one row that concurrent upserts lock and queue on until each commits. A reader sums
the rows of its collection; when they outnumber the distinct tags by far, it folds them into one row
per tag (a DELETE … RETURNING of the rows its snapshot sees, summed and inserted back: writes committed
meanwhile are not in its snapshot and stay as they are, so nothing is lost or counted twice). The
service's background thread folds every FOLD_INTERVAL_S too: without it a long load that nobody lists
leaves its rows for the first reader (134,000 rows folded in 0.5 s in bench.tag_counts).
"""

from __future__ import annotations

import functools
import logging

import psycopg2
from psycopg2.extensions import cursor

from index_service.pool import Pool, run_tx

log = logging.getLogger(__name__)

TABLE = "tag_counts"
FUNCTION = "tag_counts_change"
FOLD_LOCK = 0x7A6C_0001  # pg_try_advisory_xact_lock(FOLD_LOCK, hashtext(collection)): one fold at a time
FOLD_SLACK = 1000  # fold once the rows exceed twice the distinct tags by this many
FOLD_INTERVAL_S = 10.0  # how often the background looks for grown counts (background.Background)

# The change of one side of a statement: +1 (new rows) or -1 (old rows) per tag, "" for an untagged row.
_SIDE = ("SELECT t.tag, {sign} AS n FROM {rows} AS r, "
         "unnest(CASE WHEN cardinality(r.tags) = 0 THEN ARRAY[''] ELSE r.tags END) AS t(tag)")


def _append(sides: str) -> str:
    return (f"INSERT INTO {TABLE} (collection, tag, n) SELECT TG_ARGV[0], tag, sum(n) FROM ({sides}) AS d "
            "GROUP BY tag HAVING sum(n) <> 0;")


_NEW, _OLD = _SIDE.format(sign=1, rows="new_rows"), _SIDE.format(sign=-1, rows="old_rows")
STORAGE = [
    # Tags compare byte-wise, as ListTags orders them; no key: every statement appends its own rows.
    f'CREATE TABLE IF NOT EXISTS {TABLE} (collection text NOT NULL, tag text COLLATE "C" NOT NULL, '
    "n bigint NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_collection ON {TABLE} (collection, tag)",
    # One function for the three triggers of every table; TG_ARGV[0] names the collection.
    f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"IF TG_OP = 'INSERT' THEN {_append(_NEW)} "
    f"ELSIF TG_OP = 'DELETE' THEN {_append(_OLD)} "
    f"ELSE {_append(_NEW + ' UNION ALL ' + _OLD)} END IF; RETURN NULL; END $$",
]


def create_storage(cur: cursor) -> None:
    """The counts table and the trigger function (migration 13)."""
    for statement in STORAGE:
        cur.execute(statement)


def triggers(collection: str, table: str) -> list[str]:
    """The statements that make `table` keep the counts of `collection` (names checked by catalog.NAME_RE)."""
    arg = f"'{collection}'"
    return [
        f"CREATE TRIGGER {table}_tags_ins AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}({arg})",
        # Every UPDATE fires it (a column list is not allowed with transition tables); unchanged tags add nothing.
        f"CREATE TRIGGER {table}_tags_upd AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows "
        f"NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}({arg})",
        f"CREATE TRIGGER {table}_tags_del AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}({arg})",
    ]


def install(cur: cursor, collection: str, table: str) -> None:
    """Keep the counts of `collection` from now on (an empty table: nothing to count yet)."""
    for statement in triggers(collection, table):
        cur.execute(statement)


def fill(cur: cursor, collection: str, table: str) -> None:
    """Count the rows `table` holds now (once, at migration; after install, whose lock holds writers off)."""
    cur.execute(f"DELETE FROM {TABLE} WHERE collection = %s", (collection,))
    cur.execute(f"INSERT INTO {TABLE} (collection, tag, n) SELECT %s, tag, sum(n) FROM ("
                + _SIDE.format(sign=1, rows=table) + ") AS d GROUP BY tag", (collection,))


def forget(cur: cursor, collection: str) -> None:
    """Drop the counts of a dropped collection (its table's triggers go with the table)."""
    cur.execute(f"DELETE FROM {TABLE} WHERE collection = %s", (collection,))


def counts(cur: cursor, collection: str) -> list[tuple[str, int]]:
    """Every tag in use with its number of images, "" (the untagged) first, then by code point."""
    cur.execute(f"SELECT tag, sum(n)::bigint, count(*) FROM {TABLE} WHERE collection = %s GROUP BY tag "
                "ORDER BY tag", (collection,))
    rows = cur.fetchall()
    if sum(int(r[2]) for r in rows) > 2 * len(rows) + FOLD_SLACK:
        cur.execute("SAVEPOINT fold")
        try:
            fold(cur, collection)
            cur.execute("RELEASE SAVEPOINT fold")
        except psycopg2.Error as err:  # the answer stands without it (a deadline ran out): the next read folds
            log.info("folding the tag counts of %s failed: %s", collection, str(err).strip())
            cur.execute("ROLLBACK TO SAVEPOINT fold")
    return [(str(tag), int(n)) for tag, n, _ in rows if n]


def fold(cur: cursor, collection: str) -> bool:
    """Replace the rows of `collection` by one per tag, unless another fold of it is under way."""
    cur.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (FOLD_LOCK, collection))
    row = cur.fetchone()
    if not row or not row[0]:
        return False
    # DropCollection locks this row FOR UPDATE before it forgets the counts: a fold either ends before the
    # drop deletes (its sums included) or finds the collection gone (no sums left behind for a later namesake).
    cur.execute("SELECT 1 FROM collections WHERE name = %s FOR KEY SHARE", (collection,))
    if cur.fetchone() is None:
        return False
    cur.execute(f"WITH gone AS (DELETE FROM {TABLE} WHERE collection = %s RETURNING tag, n) "
                f"INSERT INTO {TABLE} (collection, tag, n) SELECT %s, tag, sum(n) FROM gone GROUP BY tag "
                "HAVING sum(n) <> 0", (collection, collection))
    return True


def grown(cur: cursor) -> list[str]:
    """The collections whose rows outnumber their distinct tags enough to be folded."""
    cur.execute(f"SELECT collection FROM {TABLE} GROUP BY collection "
                "HAVING count(*) > 2 * count(DISTINCT tag) + %s ORDER BY collection", (FOLD_SLACK,))
    return [str(r[0]) for r in cur.fetchall()]


def fold_grown(pool: Pool, timeout_s: float = 60.0) -> list[str]:
    """Fold every grown collection's counts, each in its own transaction; returns those folded."""
    done = []
    for name in run_tx(pool, grown, timeout_s):
        if run_tx(pool, functools.partial(fold, collection=name), timeout_s):
            done.append(name)
    return done
