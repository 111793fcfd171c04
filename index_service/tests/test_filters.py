"""Tags, facts, filters, date sorts and cutoffs without a database: validation, arrangement, and the SQL of
both dialects (the Lantern dialect cannot run here, so its emitted statements are checked)."""

from __future__ import annotations

import numpy as np
import pytest

from index_service import filters, photo_sql
from index_service.config import HnswParams
from index_service.dialects import Lantern, PgVector
from index_service.domain import Hit, InvalidArgument, SearchQuery
from index_service.photos import Facts, Filter, GeoBox, Order, check_facts, clean_tag, clean_tags, label_of

P = HnswParams(m=16, ef_construction=64, ef=100)
VEC = np.array([0.6, 0.8], dtype=np.float32)
LANTERN_DIST = "v <=> %s::real[]"


def query(**kw: object) -> SearchQuery:
    return SearchQuery(vector=VEC, k=kw.pop("k", 10), **kw)  # type: ignore[arg-type]


def lantern(q: SearchQuery) -> filters.Plan:
    return filters.plan(Lantern(), "images", q, P.ef, filters.candidates(q, max_k=1000))


@pytest.mark.parametrize(("photo", "condition", "params"), [
    (Filter(tags_any=("dog", "cat")), "tags && %s::text[]", [["cat", "dog"]]),
    (Filter(tags_all=("dog", "beach")), "tags @> %s::text[]", [["beach", "dog"]]),
    (Filter(taken_from=100), "taken_at >= %s", [100]),
    (Filter(taken_until=200), "taken_at < %s", [200]),
    (Filter(camera="Canon"), "(lower(camera_make) = lower(%s) OR lower(camera_model) = lower(%s))",
     ["Canon", "Canon"]),
    (Filter(has_location=True), "latitude IS NOT NULL", []),
    (Filter(has_location=False), "latitude IS NULL", []),
    (Filter(box=GeoBox(40, -10, 50, 10)), "latitude BETWEEN %s AND %s AND longitude BETWEEN %s AND %s",
     [40, 50, -10, 10]),
    (Filter(box=GeoBox(-20, 170, 0, -170)), "latitude BETWEEN %s AND %s AND (longitude >= %s OR longitude <= %s)",
     [-20, 0, 170, -170]),
])
def test_lantern_sql_of_every_filter(photo: Filter, condition: str, params: list[object]) -> None:
    plan = lantern(query(photo=photo))
    assert plan.sql == (f"SELECT id, label, source, width, height, tags, taken_at, taken_offset_minutes, "
                        f"{LANTERN_DIST} FROM images WHERE {condition} ORDER BY {LANTERN_DIST} LIMIT 10")
    assert plan.exact_sql == (f"SELECT id, label, source, width, height, tags, taken_at, taken_offset_minutes, "
                              f"{LANTERN_DIST} FROM images "
                              f"WHERE v IS NOT NULL AND {condition} ORDER BY {LANTERN_DIST} LIMIT 10")
    assert plan.params == ["{0.600000024,0.800000012}", *params, "{0.600000024,0.800000012}"]
    # Filtered: no forced index scan (the planner may use the GIN or B-tree index), init_k >= k.
    assert plan.settings == ["SET LOCAL lantern_hnsw.init_k = 10"]
    assert plan.exact_settings == ["SET LOCAL enable_indexscan = off"]


def test_labels_are_more_tags_and_filters_combine() -> None:
    q = query(labels=("cat",), source="s", photo=Filter(tags_any=("dog",), tags_all=("x",), taken_from=5))
    where, params = filters.conditions(q)
    assert where == ["tags && %s::text[]", "tags @> %s::text[]", "source = %s", "taken_at >= %s"]
    assert params == [["cat", "dog"], ["x"], "s", 5]


@pytest.mark.parametrize("sort", ["date_desc", "date_asc"])
def test_lantern_sql_of_a_date_sort_fetches_by_relevance_first(sort: str) -> None:
    plan = lantern(query(k=5, order=Order(sort=sort, offset=20)))
    assert plan.limit == 100 and plan.sql.endswith(f"ORDER BY {LANTERN_DIST} LIMIT 100")
    assert plan.settings == ["SET LOCAL lantern_hnsw.init_k = 100", "SET LOCAL enable_seqscan = off"]
    similar = lantern(query(k=5, exclude_id=7, order=Order(sort=sort)))
    assert similar.limit == 101  # the query image itself comes back and is dropped
    assert lantern(query(k=200, order=Order(sort=sort, offset=300))).limit == 1000  # 2 x (offset + k), at most max_k


class FakeCursor:
    """Answers candidate queries with `n` rows whose scores fall by 0.001 per row; records the SQL."""

    def __init__(self, n: int) -> None:
        self.n, self.sql, self.rows, self.round_trips = n, [], [], 0  # type: list[str]

    def execute(self, sql: str, params: object = None) -> None:
        self.sql += sql.split("; ")  # a round trip may hold several statements
        self.round_trips += 1
        limit = int(sql.rsplit("LIMIT ", 1)[1]) if "LIMIT" in sql else 0
        self.rows = [(i, "", "", 0, 0, [], 1000 + i, None, i * 0.001) for i in range(1, min(limit, self.n) + 1)]

    def fetchall(self) -> list[tuple[object, ...]]:
        return self.rows


@pytest.mark.parametrize(("gap", "limits", "found"), [(0.0505, [100], 51), (0.2005, [100, 400], 201),
                                                       (0.5005, [100, 400, 1000], 501)])
def test_a_date_sort_fetches_more_while_the_last_candidate_is_relevant(gap: float, limits: list[int],
                                                                       found: int) -> None:
    cur = FakeCursor(5000)
    q = query(k=10, order=Order(sort="date_desc", gap=gap))
    hits, _ = filters.search(cur, Lantern(), "images", q, P.ef, 1000, (0.05, None))  # type: ignore[arg-type]
    asked = [int(s.rsplit("LIMIT ", 1)[1]) for s in cur.sql if s.startswith("SELECT")]
    assert asked == limits
    # Newest first among the relevant: ids (and dates) 1..found have scores within the gap of the best.
    assert [h.id for h in hits] == list(range(found, found - 10, -1))
    small = FakeCursor(30)  # fewer rows than asked: the exact scan confirms, nothing more to fetch
    filters.search(small, Lantern(), "images", q, P.ef, 1000, (0.05, None))  # type: ignore[arg-type]
    assert [s for s in small.sql if s.startswith("SELECT")] == [lantern(q).sql, lantern(q).exact_sql]


class PlannerCursor:
    """Answers EXPLAIN (FORMAT JSON) as psycopg2 does (the json parsed); records the SQL and parameters."""

    def __init__(self, rows: int) -> None:
        self.rows, self.sql, self.params = rows, "", None  # type: int, str, object

    def execute(self, sql: str, params: object = None) -> None:
        self.sql, self.params = sql, params

    def fetchone(self) -> tuple[object]:
        return ([{"Plan": {"Node Type": "Bitmap Heap Scan", "Plan Rows": self.rows}}],)


def test_matching_rows_asks_the_planner_about_the_filters_only() -> None:
    cur = PlannerCursor(1234)
    q = query(k=10, labels=("cat",), photo=Filter(taken_from=100))
    assert filters.matching_rows(cur, "images_c3", q) == 1234  # type: ignore[arg-type]
    assert cur.sql == ("EXPLAIN (FORMAT JSON) SELECT 1 FROM images_c3 WHERE v IS NOT NULL AND "
                       "tags && %s::text[] AND taken_at >= %s")
    assert cur.params == [["cat"], 100]  # no vector: the estimate is the WHERE clause's alone


@pytest.mark.parametrize(("selective", "rows", "statements", "used"), [
    (False, 5000, ["SET LOCAL lantern_hnsw.init_k = 10", "SELECT"], "index"),
    (False, 3, ["SET LOCAL lantern_hnsw.init_k = 10", "SELECT", "SET LOCAL enable_indexscan = off", "SELECT"],
     "index_ran_out"),
    (True, 5000, ["SET LOCAL enable_indexscan = off", "SELECT"], "selective_filter"),
])
def test_a_selective_filter_skips_the_graph_and_each_search_names_its_plan(
        selective: bool, rows: int, statements: list[str], used: str) -> None:
    cur = FakeCursor(rows)
    q = query(k=10, photo=Filter(tags_any=("rare",)))
    hits, plan = filters.search(cur, Lantern(), "images", q, P.ef, 1000, (0.05, None),  # type: ignore[arg-type]
                                selective=selective)
    assert [s if not s.startswith("SELECT") else "SELECT" for s in cur.sql] == statements
    assert cur.round_trips == statements.count("SELECT")  # each query with its settings
    assert "tags && %s::text[]" in cur.sql[-1] and len(hits) == min(rows, 10) and plan == used


def test_relevance_offset_fetches_the_skipped_rows_too() -> None:
    plan = lantern(query(k=10, order=Order(offset=30)))
    assert plan.limit == 40 and plan.sql.endswith("LIMIT 40")
    assert plan.settings == ["SET LOCAL lantern_hnsw.init_k = 40", "SET LOCAL enable_seqscan = off"]
    pg = filters.plan(PgVector(), "images_c2", query(k=10, photo=Filter(tags_any=("a",))), P.ef, 10)
    assert pg.settings == ["SET LOCAL hnsw.ef_search = 100", "SET LOCAL hnsw.iterative_scan = relaxed_order"]
    assert ("FROM images_c2 WHERE NOT unindexed AND tags && %s::text[] ORDER BY v <=> (SELECT v FROM q) LIMIT 10"
            in pg.sql)


def test_pgvector_scans_the_unindexed_rows_exactly_beside_the_graph() -> None:
    pg = filters.plan(PgVector(), "images_c2", query(k=10, photo=Filter(tags_any=("a",))), P.ef, 10)
    dist = "v <=> (SELECT v FROM q)"
    cols = "id, label, source, width, height, tags, taken_at, taken_offset_minutes"
    graph = (f"SELECT {cols}, {dist}, false FROM images_c2 WHERE NOT unindexed AND tags && %s::text[] "
             f"ORDER BY {dist} LIMIT 10")
    waiting = (f"SELECT {cols}, {dist}, true FROM images_c2 WHERE unindexed AND v IS NOT NULL AND tags && %s::text[] "
               f"ORDER BY {dist} LIMIT 10")
    assert pg.sql == f"WITH q AS (SELECT %s::vector AS v) ({graph}) UNION ALL ({waiting})"
    vec = "[0.600000024,0.800000012]"
    assert pg.params == [vec, ["a"], ["a"]] and pg.exact_params == [vec, ["a"], vec]  # the vector sent once
    assert "unindexed" not in pg.exact_sql  # the exact scan reads every row anyway
    assert "unindexed" not in lantern(query(k=10)).sql  # Lantern's graph takes every row in


class DeltaCursor:
    """Answers the graph-and-waiting query with the given (id, distance, waiting) rows, in branch order."""

    def __init__(self, rows: list[tuple[int, float, bool]]) -> None:
        self.given, self.sql = rows, []  # type: list[tuple[int, float, bool]], list[str]

    def execute(self, sql: str, params: object = None) -> None:
        self.sql.append(sql)

    def fetchall(self) -> list[tuple[object, ...]]:
        return [(i, "", "", 0, 0, [], None, None, d, w) for i, d, w in self.given]


def test_the_nearest_of_graph_and_waiting_rows_are_kept_and_only_the_graph_can_run_out() -> None:
    p = filters.plan(PgVector(), "images_c2", query(k=3), P.ef, 3)
    cur = DeltaCursor([(1, 0.10, False), (2, 0.30, False), (3, 0.40, False), (7, 0.05, True), (8, 0.35, True)])
    rows, ran_out = filters.fetch(cur, p, exact=False)  # type: ignore[arg-type]
    assert [r[0] for r in rows] == [7, 1, 2] and not ran_out and len(cur.sql) == 1
    cur = DeltaCursor([(1, 0.10, False), (7, 0.05, True), (8, 0.35, True)])  # the graph found 1 of 3
    rows, ran_out = filters.fetch(cur, p, exact=False)  # type: ignore[arg-type]
    assert ran_out and len(cur.sql) == 2 and "enable_indexscan = off" in cur.sql[1]


def hit(i: int, score: float, taken: int | None) -> Hit:
    return Hit(i, score, "", "", 0, 0, (), taken)


HITS = [hit(1, 0.90, 300), hit(2, 0.88, None), hit(3, 0.86, 100), hit(4, 0.80, 200), hit(5, 0.50, 400)]


def test_date_sorts_keep_the_relevant_hits_undated_last() -> None:
    desc = filters.arrange(HITS, query(order=Order(sort="date_desc", gap=0.15)), default_gap=0.05)
    assert [h.id for h in desc] == [1, 4, 3, 2]  # 5 is 0.40 below the best
    asc = filters.arrange(HITS, query(order=Order(sort="date_asc", gap=0.15)), default_gap=0.05)
    assert [h.id for h in asc] == [3, 4, 1, 2]
    default = filters.arrange(HITS, query(order=Order(sort="date_desc")), default_gap=0.05)
    assert [h.id for h in default] == [1, 3, 2]  # the server's gap: within 0.05 of 0.90
    fraction = filters.arrange(HITS, query(order=Order(sort="date_asc", fraction=0.5)), default_gap=0.05)
    assert [h.id for h in fraction] == [3, 4, 1, 5, 2]  # 0.50 >= 0.90 * 0.5
    both = filters.arrange(HITS, query(order=Order(sort="date_asc", gap=0.5, fraction=0.97)), default_gap=0.05)
    assert [h.id for h in both] == [1, 2]  # the stricter bound wins


def test_relevance_with_a_cutoff_marks_instead_of_dropping_and_offset_skips() -> None:
    marked = filters.arrange(HITS, query(order=Order(gap=0.05)), default_gap=0.05)
    assert [(h.id, h.below_cutoff) for h in marked] == [(1, False), (2, False), (3, False), (4, True), (5, True)]
    plain = filters.arrange(HITS, query(), default_gap=0.05)
    assert not any(h.below_cutoff for h in plain)  # the default applies to date sorts only
    page = filters.arrange(HITS, query(k=2, order=Order(offset=2)), default_gap=0.05)
    assert [h.id for h in page] == [3, 4]
    dated = filters.arrange(HITS, query(k=2, order=Order(sort="date_desc", gap=1, offset=1)), default_gap=0.05)
    assert [h.id for h in dated] == [1, 4]
    assert filters.arrange(HITS, query(min_score=0.85), default_gap=None) == HITS[:3]


def test_the_best_hit_is_always_relevant() -> None:
    assert filters.threshold(-0.2, None, 0.5) == -0.2  # a fraction of a negative best would exclude it
    assert filters.threshold(0.3, 0.0, None) == pytest.approx(0.3)
    assert filters.threshold(0.3, None, None) == -2.0


def test_tags_are_trimmed_distinct_sorted_and_bounded() -> None:
    assert clean_tags([" dog ", "cat", "dog"]) == ("cat", "dog")
    assert clean_tag("  chat noir ") == "chat noir"
    for bad, words in [("", "empty"), ("   ", "empty"), ("a" * 101, "longer than 100"),
                       ("a\x00b", "control"), ("tab\there", "control"), ("x\x85y", "control"), ("x\x7fy", "control")]:
        with pytest.raises(InvalidArgument, match=words):
            clean_tag(bad)
    assert len(clean_tags([f"t{i}" for i in range(64)])) == 64
    with pytest.raises(InvalidArgument, match="65 tags; at most 64"):
        clean_tags([f"t{i}" for i in range(65)])


@pytest.mark.parametrize(("facts", "words"), [
    (Facts(taken_at=0, taken_offset_minutes=900), "taken_offset_minutes"),
    (Facts(taken_offset_minutes=60), "without taken_at"),
    (Facts(latitude=91.0, longitude=0.0), "latitude 91.0"),
    (Facts(latitude=0.0, longitude=-180.5), "longitude -180.5"),
    (Facts(latitude=float("nan"), longitude=0.0), "latitude nan"),
    (Facts(latitude=1.0), "together"),
])
def test_facts_out_of_range_are_refused(facts: Facts, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        check_facts(facts)


def test_label_of_and_text_arrays() -> None:
    assert label_of("cat", ("animal", "cat")) == "cat"
    assert label_of("cat", ("animal",)) == "animal"  # the label tag was removed
    assert label_of("", ()) == ""
    assert photo_sql.text_array([]) == bytes.fromhex("00000000" "00000000" "00000019")
    assert photo_sql.text_array(["ab"]) == bytes.fromhex("00000001 00000000 00000019 00000001 00000001 00000002 6162")
