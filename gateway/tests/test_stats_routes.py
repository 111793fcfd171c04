"""GET /api/stats passes on what the index says about its answers: recall estimate and target, breadth, estimates."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.tests.fakes import FakeBackends
from protos.semsearch.v1 import index_pb2


def test_a_measured_recall_below_target_is_passed_on(fake: FakeBackends, client: TestClient) -> None:
    fake.stats_reply = index_pb2.StatsResponse(
        count=123_456, estimated=True, recall_estimate=0.953, recall_queries=50, recall_measured_at=1_700_000_000,
        recall_target=0.98, search_breadth=150, vector_type="float16", reads_from_replica=True,
        unindexed_rows=321)
    stats = client.get("/api/stats").json()
    assert stats["count"] == 123_456 and stats["estimated"] is True
    assert stats["recall_estimate"] == pytest.approx(0.953) and stats["recall_target"] == pytest.approx(0.98)
    assert stats["recall_queries"] == 50 and stats["recall_measured_at"] == "2023-11-14T22:13:20Z"
    assert stats["recall_below_target"] is True
    assert stats["search_breadth"] == 150 and stats["vector_type"] == "float16"
    assert stats["reads_from_replica"] is True and stats["unindexed"] == 321


def test_a_recall_at_target_is_not_below_it(fake: FakeBackends, client: TestClient) -> None:
    fake.stats_reply = index_pb2.StatsResponse(recall_estimate=0.99, recall_queries=50, recall_measured_at=1,
                                               recall_target=0.98)
    stats = client.get("/api/stats").json()
    assert stats["recall_estimate"] == pytest.approx(0.99) and stats["recall_below_target"] is False


def test_never_measured_and_no_target_are_null_not_zero(fake: FakeBackends, client: TestClient) -> None:
    fake.stats_reply = index_pb2.StatsResponse(count=40, search_breadth=40, vector_type="float32")
    stats = client.get("/api/stats").json()
    assert stats["recall_estimate"] is None and stats["recall_measured_at"] is None
    assert stats["recall_target"] is None and stats["recall_queries"] == 0
    assert stats["recall_below_target"] is False and stats["estimated"] is False


def test_a_measurement_without_a_target_is_never_below_it(fake: FakeBackends, client: TestClient) -> None:
    fake.stats_reply = index_pb2.StatsResponse(recall_estimate=0.5, recall_queries=20, recall_measured_at=1)
    stats = client.get("/api/stats").json()
    assert stats["recall_estimate"] == pytest.approx(0.5) and stats["recall_target"] is None
    assert stats["recall_below_target"] is False


def test_the_new_fields_are_documented(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    fields = spec["components"]["schemas"]["Stats"]["properties"]
    for name in ("recall_estimate", "recall_queries", "recall_measured_at", "recall_target", "recall_below_target",
                 "search_breadth", "vector_type", "estimated", "reads_from_replica", "unindexed"):
        assert fields[name].get("description"), name
    assert {"type": "null"} in fields["recall_estimate"]["anyOf"]
