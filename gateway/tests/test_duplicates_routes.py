"""Routes of the near-duplicate scan and the display rendition, over the fake backends."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.tests.fakes import FakeBackends, rpc_error
from protos.semsearch.v1 import index_pb2
from semsearch_common.errors import InvalidArgument, NotFound, Unavailable


def test_a_page_of_groups_with_progress_and_the_next_cursor(fake: FakeBackends, client: TestClient) -> None:
    r = client.get("/api/duplicates", params={"max_distance": 0.03, "after": 4, "limit": 6})
    assert r.status_code == 200
    body = r.json()
    assert (body["scanned"], body["total"], body["next"], body["done"], body["max_distance"]) == (10, 25, 10, False,
                                                                                                  0.03)
    first, second = body["groups"][0]["members"]
    assert (first["id"], first["distance"], first["file_name"], first["width"]) == (3, 0.0, "a.jpg", 40)
    assert (first["thumbnail_url"], first["image_url"], first["display_url"]) == (
        "/images/3/thumb", "/images/3", "/images/3/display")
    assert (second["id"], second["distance"]) == (9, pytest.approx(0.02))
    assert body["groups"][0]["truncated"] is False
    asked = fake.duplicate_requests[-1]
    assert (asked.max_distance, asked.after_id, asked.limit, asked.collection) == (pytest.approx(0.03), 4, 6, "")


def test_the_last_page_has_no_next_cursor(fake: FakeBackends, client: TestClient) -> None:
    fake.duplicate_page = index_pb2.FindDuplicatesResponse(last_id=25, scanned=25, total=25, done=True)
    body = client.get("/api/duplicates").json()
    assert (body["groups"], body["next"], body["done"]) == ([], None, True)
    asked = fake.duplicate_requests[-1]
    assert (asked.max_distance, asked.after_id, asked.limit) == (pytest.approx(0.05), 0, 200)  # the defaults


def test_the_collection_reaches_the_index_and_the_urls(fake: FakeBackends, client: TestClient) -> None:
    member = client.get("/api/duplicates", params={"collection": "second"}).json()["groups"][0]["members"][0]
    assert fake.duplicate_requests[-1].collection == "second"
    assert member["display_url"] == "/images/3/display?collection=second"
    assert member["thumbnail_url"] == "/images/3/thumb?collection=second"


@pytest.mark.parametrize("params", [
    {"max_distance": "-0.1"}, {"max_distance": "0.6"}, {"max_distance": "nan"}, {"max_distance": "inf"},
    {"max_distance": "close"}, {"limit": "0"}, {"limit": "1001"}, {"after": "-1"}, {"after": "x"},
    {"after": str(2**63)}, {"collection": "Bad Name"},
])
def test_bad_parameters_are_400_before_the_index_is_asked(fake: FakeBackends, client: TestClient,
                                                          params: dict[str, str]) -> None:
    r = client.get("/api/duplicates", params=params)
    assert r.status_code == 400 and r.json()["error"] == "bad_request", r.text
    assert next(iter(params)) in r.json()["message"]
    assert fake.duplicate_requests == []


@pytest.mark.parametrize(("err", "status"), [
    (InvalidArgument("max_distance must be between 0 and 0.5"), 400), (NotFound("no collection 'x'"), 404),
    (Unavailable("the database is down"), 503),
])
def test_index_errors_keep_their_status(fake: FakeBackends, client: TestClient, err: Exception, status: int) -> None:
    fake.failures["FindDuplicates"] = rpc_error(err)  # type: ignore[arg-type]
    assert client.get("/api/duplicates").status_code == status


def test_the_display_route_asks_for_the_display_variant_with_image_caching(fake: FakeBackends,
                                                                           client: TestClient) -> None:
    r = client.get("/images/7/display")
    assert r.status_code == 200 and r.content == b"abc" and fake.variants == ["display"]
    assert r.headers["etag"] == '"00-display"' and "immutable" in r.headers["cache-control"]
    assert r.headers["content-disposition"] == 'inline; filename="7-display.png"'
    assert client.get("/images/7/display", headers={"If-None-Match": '"00-display"'}).status_code == 304
    assert client.get("/images/7").headers["etag"] == '"00"' and fake.variants[-1] == ""
    assert client.get("/images/7/thumb").headers["etag"] == '"00-thumb"' and fake.variants[-1] == "thumb"


def test_head_of_the_display_route_has_the_headers_of_get_and_no_body(client: TestClient) -> None:
    get, head = client.get("/images/7/display"), client.head("/images/7/display")
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-length", "content-type", "cache-control"):
        assert head.headers[name] == get.headers[name]


def test_display_errors(fake: FakeBackends, client: TestClient) -> None:
    assert client.get("/images/0/display").status_code == 400
    fake.failures["GetImage"] = rpc_error(NotFound("no image with id 7"))
    assert client.get("/images/7/display").status_code == 404
    assert client.head("/images/7/display").status_code == 404


def test_the_openapi_spec_documents_both_routes(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    dup = spec["paths"]["/api/duplicates"]["get"]
    assert {p["name"] for p in dup["parameters"]} == {"max_distance", "after", "limit", "collection"}
    assert "smallest id" in dup["description"]
    assert "DuplicatePage" in spec["components"]["schemas"]
    assert set(spec["paths"]["/images/{image_id}/display"]) >= {"get", "head"}
