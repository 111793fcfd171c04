"""Tag editing, tag lists, upload tags and image facts against a fake index: what reaches it, and every 400."""

from __future__ import annotations

import grpc
import pytest
from fastapi.testclient import TestClient

from embedder_service.tests import images
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.tests.fakes import Recording, bare_error
from protos.semsearch.v1 import common_pb2, index_pb2

TOKEN = "tag-token"


@pytest.fixture
def fake() -> Recording:
    return Recording(GatewayConfig())


def test_tags_are_added_and_removed(fake: Recording, client: TestClient) -> None:
    fake.existing = frozenset({3, 7})
    r = client.post("/api/tags", json={"ids": [7, 3, 9, 3], "add": [" sea ", "beach", "sea"], "remove": ["old"],
                                       "collection": "second"})
    assert r.status_code == 200, r.text
    assert r.json() == {"updated": [3, 7], "missing": [9]}
    sent = fake.requests[-1]
    assert isinstance(sent, index_pb2.UpdateTagsRequest)
    assert (list(sent.ids), list(sent.add), list(sent.remove), sent.collection) == ([3, 7, 9], ["sea", "beach"],
                                                                                   ["old"], "second")
    fake.existing = None
    assert client.post("/api/tags", json={"ids": [1], "remove": ["x"]}).json() == {"updated": [1], "missing": []}
    assert fake.asked[-1] == ("UpdateTags", "")


def test_tags_of_no_existing_image_are_404(fake: Recording, client: TestClient) -> None:
    fake.existing = frozenset()
    r = client.post("/api/tags", json={"ids": [42], "add": ["x"]})
    assert r.status_code == 404 and "42" in r.json()["message"]


@pytest.mark.parametrize(("body", "named"), [
    ({"add": ["x"]}, "ids"),
    ({"ids": [], "add": ["x"]}, "ids"),
    ({"ids": [0], "add": ["x"]}, "ids"),
    ({"ids": [-1], "add": ["x"]}, "ids"),
    ({"ids": ["one"], "add": ["x"]}, "ids"),
    ({"ids": list(range(1, 1002)), "add": ["x"]}, "ids"),
    ({"ids": [1]}, "add, remove"),
    ({"ids": [1], "add": [], "remove": []}, "add, remove"),
    ({"ids": [1], "add": ["x"], "remove": [" x"]}, "add, remove"),
    ({"ids": [1], "add": ["  "]}, "add"),
    ({"ids": [1], "add": ["a\x00b"]}, "add"),
    ({"ids": [1], "add": ["line\nbreak"]}, "add"),
    ({"ids": [1], "add": ["bell\x07"]}, "add"),
    ({"ids": [1], "add": ["c1\x85"]}, "add"),
    ({"ids": [1], "add": ["trailing\n"]}, "add"),
    ({"ids": [1], "add": ["x" * 101]}, "add"),
    ({"ids": [1], "add": [f"t{i}" for i in range(65)]}, "add"),
    ({"ids": [1], "remove": ["a\x1fb"]}, "remove"),
    ({"ids": [1], "add": "beach"}, "add"),
    ({"ids": [1], "add": [5]}, "add"),
    ({"ids": [1], "add": ["x"], "collection": "Bad-Name"}, "collection"),
])
def test_bad_tag_edits_are_400_naming_the_field(fake: Recording, client: TestClient, body: dict[str, object],
                                                named: str) -> None:
    r = client.post("/api/tags", json=body)
    assert r.status_code == 400, r.text
    assert named in r.json()["message"], r.json()
    assert fake.requests == []


def test_a_tag_of_100_characters_is_fine(fake: Recording, client: TestClient) -> None:
    assert client.post("/api/tags", json={"ids": [1], "add": ["é" * 100]}).status_code == 200
    assert list(fake.requests[-1].add) == ["é" * 100]


def test_not_json_is_400(client: TestClient) -> None:
    assert client.post("/api/tags", content=b"ids=1", headers={"Content-Type": "text/plain"}).status_code == 400
    assert client.post("/api/tags", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400


def test_editing_tags_needs_the_token_when_there_is_one(fake: Recording) -> None:
    fake.config = GatewayConfig(token=TOKEN)
    with TestClient(create_app(fake.config, connect=lambda _: fake)) as c:
        body = {"ids": [1], "add": ["x"]}
        assert c.post("/api/tags", json=body).status_code == 401
        assert c.post("/api/tags", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/api/tags", json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/tags").status_code == 200  # reading needs none


def test_tags_are_listed_with_counts(fake: Recording, client: TestClient) -> None:
    fake.tag_counts = (index_pb2.TagCount(tag="beach", count=3), index_pb2.TagCount(tag="sea", count=1))
    r = client.get("/api/tags", params={"collection": "second"})
    assert r.status_code == 200 and r.json() == [{"tag": "beach", "count": 3}, {"tag": "sea", "count": 1}]
    assert fake.asked[-1] == ("ListTags", "second")
    assert client.get("/api/tags", params={"collection": "No"}).status_code == 400


def upload(client: TestClient, data: dict[str, object]) -> index_pb2.UpsertRequest | int:
    r = client.post("/api/images", data=data, files={"files": ("p.jpg", images.jpeg(seed=8), "image/jpeg")})
    return r.status_code


def test_upload_tags_reach_the_index_with_the_label(fake: Recording, client: TestClient) -> None:
    assert upload(client, {"tags": ["harbour", " boats ", "", "harbour"], "label": "trip"}) == 201
    item = fake.requests[-1].items[0]
    assert list(item.tags) == ["harbour", "boats"] and item.label == "trip"
    assert upload(client, {"label": "only-label"}) == 201  # the old form keeps working
    item = fake.requests[-1].items[0]
    assert list(item.tags) == [] and item.label == "only-label"


@pytest.mark.parametrize("tags", [["a\x00"], ["x" * 101], [f"t{i}" for i in range(65)], ["new\nline"]])
def test_bad_upload_tags_are_400(fake: Recording, client: TestClient, tags: list[str]) -> None:
    r = client.post("/api/images", data={"tags": tags}, files={"files": ("p.jpg", images.jpeg(seed=8), "image/jpeg")})
    assert r.status_code == 400 and "tags" in r.json()["message"], r.text
    assert fake.embedded == []


def test_the_embedders_facts_are_stored_with_the_upload(fake: Recording, client: TestClient) -> None:
    facts = common_pb2.PhotoFacts(taken_at=1_625_405_400, camera_model="X100")
    original = fake.embed_images

    async def with_facts(*args: object, **kwargs: object) -> object:
        reply = await original(*args, **kwargs)  # type: ignore[arg-type]
        for result in reply.results:
            result.facts.CopyFrom(facts)
        return reply

    fake.embed_images = with_facts  # type: ignore[method-assign]
    assert upload(client, {}) == 201
    assert fake.requests[-1].items[0].facts == facts


def test_image_metadata_has_tags_facts_and_the_file_time(fake: Recording, client: TestClient) -> None:
    fake.meta = index_pb2.ImageMeta(
        id=4, tags=["beach", "sea"], file_mtime_ns=1_700_000_000_123_456_789,
        facts=common_pb2.PhotoFacts(taken_at=1_625_405_400, taken_offset_minutes=120, camera_make="Canon",
                                    camera_model="EOS 5D", latitude=46.2, longitude=6.15,
                                    notes=["GPSAltitude ignored"]))
    body = client.get("/api/images/4").json()
    assert body["tags"] == ["beach", "sea"]
    assert body["facts"] == {"taken_at": "2021-07-04T15:30:00+02:00", "taken_offset_minutes": 120,
                             "camera_make": "Canon", "camera_model": "EOS 5D", "latitude": 46.2, "longitude": 6.15,
                             "notes": ["GPSAltitude ignored"]}
    assert body["file_modified_at"] == "2023-11-14T22:13:20.123457Z"
    # No offset: the camera's clock, written without a zone; no position, no file time.
    fake.meta = index_pb2.ImageMeta(id=4, facts=common_pb2.PhotoFacts(taken_at=1_625_412_600, latitude=1.0))
    body = client.get("/api/images/4").json()
    assert body["facts"]["taken_at"] == "2021-07-04T15:30:00" and body["facts"]["taken_offset_minutes"] is None
    assert (body["facts"]["latitude"], body["facts"]["longitude"]) == (None, None)  # half a position is none
    assert body["file_modified_at"] is None and body["tags"] == []


def test_an_index_without_the_tag_rpcs_is_501_not_500(fake: Recording, client: TestClient) -> None:
    for method in ("ListTags", "UpdateTags"):
        fake.failures[method] = bare_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    listed = client.get("/api/tags")
    assert listed.status_code == 501 and listed.json()["error"] == "not_implemented"
    assert "older" in listed.json()["message"]
    assert client.post("/api/tags", json={"ids": [1], "add": ["x"]}).status_code == 501
