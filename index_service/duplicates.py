"""Near-duplicate groups: a nearest-neighbour query per image through the HNSW index, joined transitively.

A page scans the next `limit` images by ascending id. Each image's NEIGHBOURS nearest rows come from one
batched LATERAL query (the index scan runs once per image; no all-pairs comparison), and a neighbour
within `max_distance` is an edge. An image's group is everything its edges reach, followed through the
neighbours' own neighbours whatever page they lie in, so a group is the same seen from any member.
It is reported once, by the page holding its smallest id (see `groups` for the exact rule). The index
is approximate: a pair it finds from one side only is reported by its larger id, and an image can then
show up in two groups; bench/duplicates.py measures recall of planted pairs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from psycopg2.extensions import cursor

from index_service.catalog import Coll
from index_service.dialects import Dialect
from index_service.domain import ImageMeta, InvalidArgument
from index_service.pool import one_row

NEIGHBOURS = 16  # nearest rows asked per image: a burst of more copies still joins through its members
MAX_GROUP = 64  # a group stops growing here: a loose distance must not turn one page into a full scan
MAX_DISTANCE = 0.5
MAX_LIMIT = 1000
ROUNDING = 1e-6  # float32 distances of identical vectors come out as small as ±1.2e-7, not 0


@dataclass(frozen=True)
class Group:
    """A group's ids (smallest first, then by distance to it), their distances to it, and whether it was cut."""

    ids: tuple[int, ...]
    distances: tuple[float, ...]
    truncated: bool


@dataclass(frozen=True)
class Scan:
    """One page of the scan: its groups and the progress (see FindDuplicatesResponse)."""

    groups: list[Group]
    last_id: int
    scanned: int
    total: int
    done: bool
    metas: dict[int, ImageMeta] = dataclasses.field(default_factory=dict)


def check(max_distance: float, after_id: int, limit: int) -> None:
    """Raise InvalidArgument unless the request's numbers are in range."""
    if not (math.isfinite(max_distance) and 0.0 <= max_distance <= MAX_DISTANCE):
        raise InvalidArgument(f"max_distance must be between 0 and {MAX_DISTANCE}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}")
    if after_id < 0:
        raise InvalidArgument("after_id must not be negative")


# The pairs (image, neighbour within the distance) of a batch of images: SQL here, exact numpy in the fake.
Neighbours = Callable[[list[int]], list[tuple[int, int]]]


class _Graph:
    """The neighbour lists of one request, fetched in batches and kept."""

    def __init__(self, neighbours: Neighbours) -> None:
        self.neighbours = neighbours
        self.edges: dict[int, list[int]] = {}
        self.reached: dict[int, tuple[set[int], bool]] = {}

    def fetch(self, ids: list[int]) -> None:
        """Ask for the neighbours of the ids not asked yet."""
        todo = [i for i in dict.fromkeys(ids) if i not in self.edges]
        if not todo:
            return
        for i in todo:
            self.edges[i] = []
        for a, b in self.neighbours(todo):
            self.edges[a].append(b)

    def reach(self, start: int) -> tuple[set[int], bool]:
        """Every id joined to `start` by edges (asking for each level's new ids in one batch); cut at MAX_GROUP."""
        if start in self.reached:
            return self.reached[start]
        seen, frontier, truncated = {start}, [start], False
        while frontier and not truncated:
            self.fetch(frontier)
            nxt = []
            for j in (j for i in frontier for j in self.edges[i] if j not in seen):
                if len(seen) >= MAX_GROUP:
                    truncated = True
                    break
                seen.add(j)
                nxt.append(j)
            frontier = nxt
        self.reached[start] = seen, truncated
        return seen, truncated


def groups(ids: list[int], neighbours: Neighbours) -> list[tuple[set[int], bool]]:
    """The groups (members, truncated) reported by the page of `ids`, ascending by their first id.

    An image reports what it reaches unless a smaller image it reaches reaches it back (that one, or a
    smaller one still, reports the group). With an exact neighbour search that is the group's smallest
    id; with the approximate index a pair found from one side only is still reported, by its larger id.
    """
    graph = _Graph(neighbours)
    graph.fetch(ids)  # most images have no near-copy: one round trip settles them all
    found: list[tuple[set[int], bool]] = []
    for i in sorted(ids):
        if not graph.edges[i]:
            continue
        members, truncated = graph.reach(i)
        if not any(i in graph.reach(j)[0] for j in members if j < i):
            found.append((members, truncated))
    return found


def neighbour_sql(table: str, dialect: Dialect) -> str:
    """The pairs (image, neighbour) within a distance (%s) of images (%s): an HNSW scan per image, LATERAL;
    where the dialect's graph leaves rows out (graph_delta), beside it an exact scan of those rows."""
    def nearest(condition: str) -> str:
        return f"SELECT b.id, b.v <=> a.v AS d FROM {table} b {condition}ORDER BY b.v <=> a.v LIMIT {NEIGHBOURS + 1}"

    near = (f"({nearest('WHERE NOT b.unindexed ')}) UNION ALL ({nearest('WHERE b.unindexed ')})"
            if dialect.graph_delta else nearest(""))
    return (f"SELECT a.id, n.id FROM {table} a CROSS JOIN LATERAL ({near}) n "
            "WHERE a.id = ANY(%s) AND a.v IS NOT NULL AND n.id <> a.id AND n.d <= %s")


def scan(cur: cursor, c: Coll, dialect: Dialect, ef: int, max_distance: float, after_id: int,
         limit: int) -> Scan:
    """The groups whose smallest id lies among the next `limit` images above `after_id` (ids only)."""
    cur.execute(f"SELECT id FROM {c.table} WHERE id > %s ORDER BY id LIMIT %s", (after_id, limit + 1))
    ids = [r[0] for r in cur.fetchall()]
    done, ids = len(ids) <= limit, ids[:limit]
    last = ids[-1] if ids else after_id
    # The searches' breadth (the recall target's): bench/duplicates.py measures its recall and cost here.
    for statement in dialect.search_settings(NEIGHBOURS + 1, ef, False):
        cur.execute(statement)
    # As for searches: with vectors out of line the planner may think a full scan + sort per image cheaper.
    cur.execute("SET LOCAL enable_seqscan = off")
    sql = neighbour_sql(c.table, dialect)

    def neighbours(batch: list[int]) -> list[tuple[int, int]]:
        cur.execute(sql, (batch, max_distance + ROUNDING))
        return [(a, b) for a, b in cur.fetchall()]

    found = groups(ids, neighbours)
    cur.execute("SET LOCAL enable_seqscan = on")
    cur.execute(f"SELECT count(*) FILTER (WHERE id <= %s), count(*) FROM {c.table}", (last,))
    scanned, total = one_row(cur)
    return Scan([_ordered(cur, c, m, t) for m, t in found], last, scanned, total, done)


def _ordered(cur: cursor, c: Coll, members: set[int], truncated: bool) -> Group:
    """The group with its smallest id first and the rest by (exact) cosine distance to it."""
    first = min(members)
    cur.execute(f"SELECT b.id, b.v <=> a.v FROM {c.table} a JOIN {c.table} b ON b.id = ANY(%s) WHERE a.id = %s",
                (sorted(members - {first}), first))
    rest = sorted(((float(d), i) for i, d in cur.fetchall()), key=lambda p: (p[0], p[1]))
    return Group((first, *(i for _, i in rest)), (0.0, *(max(0.0, d) for d, _ in rest)), truncated)
