"""FindDuplicates through a real channel over the fake store, and the grouping rule on its own (no Postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from index_service import duplicates
from index_service.config import Config
from index_service.server import create_server
from index_service.tests.fake_store import DIM, FakeDeps, unit_vector
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common.channels import channel
from tests.support.index import item


@pytest.fixture
def deps() -> FakeDeps:
    return FakeDeps()


@pytest.fixture
def stub(tmp_path: Path, deps: FakeDeps) -> Iterator[index_pb2_grpc.IndexStub]:
    server = create_server(Config(host="127.0.0.1", port=0, dsn="", data_dir=tmp_path, max_batch=50), deps)
    server.set_serving(True)
    with channel(f"127.0.0.1:{server.port}") as chan:
        yield index_pb2_grpc.IndexStub(chan)
    server.stop(0)


def near(v: np.ndarray, seed: int, distance: float) -> np.ndarray:
    """A unit vector at about `distance` (cosine) from unit vector v."""
    noise = unit_vector(seed + 10_000) * np.sqrt(2 * distance)
    w = v + noise - (noise @ v) * v  # sideways, so the angle is what the noise length says
    return (w / np.linalg.norm(w)).astype(np.float32)


def load(stub: index_pb2_grpc.IndexStub, vectors: list[np.ndarray]) -> None:
    items = [item(v, f"k{n}") for n, v in enumerate(vectors)]
    stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=5)


def ask(stub: index_pb2_grpc.IndexStub, after: int = 0, limit: int = 100,
        max_distance: float = 0.05) -> index_pb2.FindDuplicatesResponse:
    return stub.FindDuplicates(index_pb2.FindDuplicatesRequest(max_distance=max_distance, after_id=after,
                                                               limit=limit), timeout=5)


def ids(response: index_pb2.FindDuplicatesResponse) -> list[list[int]]:
    return [[m.image.id for m in g.members] for g in response.groups]


def test_groups_join_chains_and_are_reported_once_at_their_smallest_id(stub) -> None:
    a = unit_vector(1)
    b = near(a, 2, 0.03)
    vectors = [a, unit_vector(3), b, near(b, 4, 0.03), unit_vector(5), near(unit_vector(5), 6, 0.01)]
    load(stub, vectors)  # ids 1..6: {1, 3, 4} through a chain (1-3, 3-4), {5, 6}; 2 alone
    whole = ask(stub)
    assert ids(whole)[0][0] == 1 and sorted(ids(whole)[0]) == [1, 3, 4]
    assert ids(whole)[1] == [5, 6]
    first = whole.groups[0].members
    assert first[0].distance == 0.0 and all(m.distance > 0 for m in first[1:])
    assert [m.distance for m in first[1:]] == sorted(m.distance for m in first[1:])
    assert first[0].image.file_name == "k0.jpg"
    assert (whole.last_id, whole.scanned, whole.total, whole.done) == (6, 6, 6, True)
    # Paged two by two: each group once, in the page of its smallest id, even with members beyond it.
    pages, after = [], 0
    while True:
        page = ask(stub, after, 2)
        pages.append((ids(page), page.scanned, page.done))
        if page.done:
            break
        after = page.last_id
    assert pages == [([ids(whole)[0]], 2, False), ([], 4, False), ([[5, 6]], 6, True)]


def test_max_distance_decides_what_is_a_duplicate(stub) -> None:
    a = unit_vector(1)
    load(stub, [a, near(a, 2, 0.08)])
    assert ids(ask(stub, max_distance=0.05)) == []
    assert ids(ask(stub, max_distance=0.1)) == [[1, 2]]


def test_identical_vectors_are_duplicates_at_distance_zero(stub) -> None:
    a = unit_vector(1)
    load(stub, [a, a.copy(), unit_vector(2)])
    assert ids(ask(stub, max_distance=0.0)) == [[1, 2]]


def test_an_empty_collection_or_a_cursor_past_the_end_is_done(stub) -> None:
    empty = ask(stub)
    assert (list(empty.groups), empty.last_id, empty.scanned, empty.total, empty.done) == ([], 0, 0, 0, True)
    load(stub, [unit_vector(1)])
    past = ask(stub, after=9)
    assert (past.last_id, past.scanned, past.total, past.done) == (9, 1, 1, True)


@pytest.mark.parametrize(("distance", "limit", "after"), [
    (-0.01, 10, 0), (0.51, 10, 0), (float("nan"), 10, 0), (float("inf"), 10, 0),
    (0.05, 0, 0), (0.05, 1001, 0), (0.05, 10, -1),
])
def test_bad_numbers_are_invalid_argument(stub, distance: float, limit: int, after: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.FindDuplicates(index_pb2.FindDuplicatesRequest(max_distance=distance, limit=limit, after_id=after),
                            timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_collection_is_not_found(stub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.FindDuplicates(index_pb2.FindDuplicatesRequest(max_distance=0.05, limit=10, collection="nope"),
                            timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_group_stops_growing_at_max_group_and_says_so() -> None:
    # A chain 1-2-3-…-100: everything joins, but one page never walks more than MAX_GROUP images.
    asked: list[int] = []

    def chain(batch: list[int]) -> list[tuple[int, int]]:
        asked.extend(batch)
        return [(a, b) for a in batch for b in (a - 1, a + 1) if 1 <= b <= 100]

    found = duplicates.groups([1, 2, 3], chain)
    assert len(found) == 1
    members, truncated = found[0]
    assert truncated and len(members) == duplicates.MAX_GROUP and min(members) == 1
    assert len(set(asked)) <= duplicates.MAX_GROUP + 3


def test_a_pair_seen_from_one_side_only_is_reported_once_by_its_larger_id() -> None:
    # The approximate index found 5 from 7 but not 7 from 5: 5's page sees nothing, so 7's must report it.
    def one_sided(batch: list[int]) -> list[tuple[int, int]]:
        return [(7, 5)] if 7 in batch else []

    assert duplicates.groups([5], one_sided) == []
    assert duplicates.groups([7], one_sided) == [({5, 7}, False)]
    assert duplicates.groups([5, 6, 7], one_sided) == [({5, 7}, False)]


def test_a_group_found_from_both_sides_is_reported_by_its_smallest_id_only() -> None:
    def both(batch: list[int]) -> list[tuple[int, int]]:
        pairs = {(3, 8), (8, 3), (8, 9), (9, 8)}
        return [p for p in pairs if p[0] in batch]

    assert duplicates.groups([3], both) == [({3, 8, 9}, False)]
    assert duplicates.groups([8, 9], both) == []


def test_bad_numbers_are_refused_before_any_sql() -> None:
    with pytest.raises(duplicates.InvalidArgument):
        duplicates.check(0.6, 0, 10)
    duplicates.check(0.0, 0, 1)
    duplicates.check(duplicates.MAX_DISTANCE, 2**62, duplicates.MAX_LIMIT)


def test_vectors_near_builds_what_it_says() -> None:
    a = unit_vector(1)
    assert abs((1 - float(a @ near(a, 2, 0.03))) - 0.03) < 0.005
    assert DIM == len(a)
