"""Filter, sort and cutoff parameters of the search routes against a fake index: what reaches it, and every 400."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from embedder_service.tests import images
from gateway.config import GatewayConfig
from gateway.tests.fakes import Recording
from protos.semsearch.v1 import index_pb2

Search = Callable[[TestClient, dict[str, object]], Response]


def by_text(client: TestClient, params: dict[str, object]) -> Response:
    return client.get("/api/search", params={"q": "a dog", **params})


def by_image(client: TestClient, params: dict[str, object]) -> Response:
    return client.post("/api/search/image", params=params, files={"file": ("q.jpg", images.jpeg(seed=3), "image/jpeg")})


def by_similar(client: TestClient, params: dict[str, object]) -> Response:
    return client.get("/api/images/5/similar", params=params)


ROUTES = [by_text, by_image, by_similar]


@pytest.fixture
def fake() -> Recording:
    return Recording(GatewayConfig())


def unix(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@pytest.mark.parametrize("route", ROUTES)
def test_every_filter_reaches_the_index(fake: Recording, client: TestClient, route: Search) -> None:
    r = route(client, {"tag": ["beach", " sea "], "tags": "all", "taken_from": "2021-07-01",
                       "taken_until": "2021-07-31", "camera": " Canon EOS 5D ", "has_location": "true",
                       "box": "45.8,5.9,47.8,10.5", "sort": "date_desc", "cutoff_gap": 0.1, "cutoff_fraction": 0.8,
                       "label": "old-label"})
    assert r.status_code == 200, r.text
    sent = fake.requests[-1]
    f = sent.filter
    assert list(f.tags_all) == ["beach", "sea"] and list(f.tags_any) == [] and list(f.labels) == ["old-label"]
    assert f.taken_from == unix("2021-07-01T00:00") and f.taken_until == unix("2021-08-01T00:00")  # the whole 31st
    assert f.camera == "Canon EOS 5D" and f.HasField("has_location") and f.has_location is True
    assert (f.box.south, f.box.west, f.box.north, f.box.east) == (45.8, 5.9, 47.8, 10.5)
    assert sent.sort == index_pb2.SORT_DATE_DESC
    assert sent.cutoff.gap == pytest.approx(0.1) and sent.cutoff.fraction == pytest.approx(0.8)


@pytest.mark.parametrize("route", ROUTES)
def test_no_parameters_leave_the_filter_empty(fake: Recording, client: TestClient, route: Search) -> None:
    assert route(client, {}).status_code == 200
    sent = fake.requests[-1]
    assert sent.filter == index_pb2.Filter() and sent.sort == index_pb2.SORT_RELEVANCE
    assert not sent.HasField("cutoff")


def test_each_parameter_alone(fake: Recording, client: TestClient) -> None:
    def sent(**params: object) -> index_pb2.SearchRequest:
        r = by_text(client, params)
        assert r.status_code == 200, r.text
        request: index_pb2.SearchRequest = fake.requests[-1]
        return request

    assert list(sent(tag=["a", "b", "a", ""]).filter.tags_any) == ["a", "b"]  # "any" is the default; blanks skipped
    assert sent(has_location="false").filter.has_location is False
    assert not sent(camera="").filter.camera
    f = sent(taken_from="2021-07-04T15:30:00+02:00").filter
    assert f.taken_from == unix("2021-07-04T13:30") and not f.HasField("taken_until")
    assert sent(taken_until="2021-07-04T15:30").filter.taken_until == unix("2021-07-04T15:30")  # no zone: UTC
    assert sent(taken_from="2021-07-04T15:30:00Z").filter.taken_from == unix("2021-07-04T15:30")
    assert sent(sort="date_asc").sort == index_pb2.SORT_DATE_ASC
    assert sent(sort="relevance").sort == index_pb2.SORT_RELEVANCE
    only_gap = sent(cutoff_gap=0).cutoff
    assert only_gap.HasField("gap") and only_gap.gap == 0 and not only_gap.HasField("fraction")
    only_share = sent(cutoff_fraction=1).cutoff
    assert only_share.fraction == 1 and not only_share.HasField("gap")
    box = sent(box="-10,170,10,-170").filter.box  # across the antimeridian
    assert (box.west, box.east) == (170, -170)


@pytest.mark.parametrize(("params", "named"), [
    ({"tags": "some"}, "tags"),
    ({"tag": "a\x00b"}, "tag"),
    ({"tag": "tab\there"}, "tag"),
    ({"tag": "x" * 101}, "tag"),
    ({"tag": [f"t{i}" for i in range(65)]}, "tag"),
    ({"taken_from": "yesterday"}, "taken_from"),
    ({"taken_from": "2021-13-01"}, "taken_from"),
    ({"taken_until": "2021-02-30"}, "taken_until"),
    ({"taken_until": "9999-12-31"}, "taken_until"),
    ({"taken_from": "2021-07-04T25:00"}, "taken_from"),
    ({"taken_from": "2021-08-01", "taken_until": "2021-07-01"}, "taken_from"),
    ({"taken_from": "2021-07-01T10:00", "taken_until": "2021-07-01T10:00"}, "taken_until"),
    ({"camera": "x" * 201}, "camera"),
    ({"camera": "can\x00on"}, "camera"),
    ({"has_location": "maybe"}, "has_location"),
    ({"box": "1,2,3"}, "box"),
    ({"box": "1,2,3,4,5"}, "box"),
    ({"box": "a,b,c,d"}, "box"),
    ({"box": "nan,0,1,1"}, "box"),
    ({"box": "-91,0,10,10"}, "box"),
    ({"box": "0,-181,10,10"}, "box"),
    ({"box": "0,0,10,181"}, "box"),
    ({"box": "20,0,10,10"}, "box"),
    ({"box": ""}, None),  # empty: no box (an HTML form's blank field)
    ({"sort": "date"}, "sort"),
    ({"sort": "DATE_DESC"}, "sort"),
    ({"cutoff_gap": -0.1}, "cutoff_gap"),
    ({"cutoff_gap": 2.5}, "cutoff_gap"),
    ({"cutoff_gap": "nan"}, "cutoff_gap"),
    ({"cutoff_gap": "wide"}, "cutoff_gap"),
    ({"cutoff_fraction": 1.5}, "cutoff_fraction"),
    ({"cutoff_fraction": "inf"}, "cutoff_fraction"),
])
@pytest.mark.parametrize("route", ROUTES)
def test_bad_values_are_400_naming_the_parameter(fake: Recording, client: TestClient, route: Search,
                                                 params: dict[str, object], named: str | None) -> None:
    r = route(client, params)
    if named is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    assert r.json()["status"] == 400 and named in r.json()["message"], r.json()
    assert fake.requests == [] and fake.embedded == []  # refused before any work


def test_hits_carry_tags_capture_time_and_the_cutoff_mark(fake: Recording, client: TestClient) -> None:
    fake.hits = [index_pb2.Hit(id=1, score=0.9, tags=["beach", "sea"], taken_at=unix("2021-07-04T13:30")),
                 index_pb2.Hit(id=2, score=0.5, below_cutoff=True),
                 index_pb2.Hit(id=3, score=0.4, taken_at=2**62)]  # out of any calendar: no time, not a 500
    hits = by_text(client, {"cutoff_gap": 0.2}).json()["hits"]
    assert hits[0]["tags"] == ["beach", "sea"] and hits[0]["taken_at"] == "2021-07-04T13:30:00Z"
    assert hits[0]["below_cutoff"] is False
    assert (hits[1]["tags"], hits[1]["taken_at"], hits[1]["below_cutoff"]) == ([], None, True)
    assert hits[2]["taken_at"] is None


def test_hits_carry_the_stated_offset_of_their_capture_time(fake: Recording, client: TestClient) -> None:
    fake.hits = [index_pb2.Hit(id=1, score=0.9, taken_at=unix("2021-07-03T20:00"), taken_offset_minutes=330),
                 index_pb2.Hit(id=2, score=0.8, taken_at=unix("2021-07-03T20:00"), taken_offset_minutes=0),
                 index_pb2.Hit(id=3, score=0.7, taken_at=unix("2021-07-03T20:00")),
                 index_pb2.Hit(id=4, score=0.6, taken_at=2**62, taken_offset_minutes=60)]
    hits = by_text(client, {}).json()["hits"]
    assert [h["taken_offset_minutes"] for h in hits] == [330, 0, None, None]  # 0 is UTC, None is "not stated"
    assert [h["taken_at"] for h in hits[:3]] == ["2021-07-03T20:00:00Z"] * 3  # the instant stays in UTC


def test_the_parameters_are_documented(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    for path, method in (("/api/search", "get"), ("/api/search/image", "post"),
                         ("/api/images/{image_id}/similar", "get")):
        params = {p["name"]: p for p in spec["paths"][path][method]["parameters"]}
        for name in ("tag", "tags", "taken_from", "taken_until", "camera", "has_location", "box", "sort",
                     "cutoff_gap", "cutoff_fraction"):
            assert params[name].get("description"), (path, name)
    hit = spec["components"]["schemas"]["Hit"]["properties"]
    assert {"tags", "taken_at", "below_cutoff"} <= set(hit)
    assert "local" in hit["taken_offset_minutes"]["description"]
    assert {"get", "post"} <= set(spec["paths"]["/api/tags"])
    info = spec["components"]["schemas"]["ImageInfo"]["properties"]
    assert "not when the picture was taken" in info["file_modified_at"]["description"]


@pytest.mark.parametrize("route", ROUTES)
def test_the_next_page_keeps_the_filters_and_the_order(fake: Recording, client: TestClient, route: Search) -> None:
    fake.hits = [index_pb2.Hit(id=i, score=1 - i / 100) for i in range(1, 3)]
    first = route(client, {"k": 2, "tag": ["beach"], "tags": "all", "taken_from": "2021-07-01", "camera": "canon",
                           "has_location": "true", "box": "45,5,47,7", "sort": "date_asc", "cutoff_gap": 0.3})
    assert first.status_code == 200, first.text
    asked = fake.requests[-1]
    cursor = first.json()["next"]
    assert cursor
    assert client.get("/api/search/next", params={"cursor": cursor}).status_code == 200
    following = fake.requests[-1]
    assert following.offset == 2 and following.filter == asked.filter and following.filter.tags_all == ["beach"]
    assert following.sort == index_pb2.SORT_DATE_ASC and following.cutoff == asked.cutoff
