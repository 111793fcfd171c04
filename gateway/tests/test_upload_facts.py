"""An upload stores what the embedder read from the file (its photo facts), through a fake of the services."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from embedder_service.tests import images
from gateway.tests.fakes import FakeBackends
from protos.semsearch.v1 import common_pb2


def test_an_upload_passes_the_embedders_facts_to_the_index(fake: FakeBackends, client: TestClient) -> None:
    fake.facts = common_pb2.PhotoFacts(taken_at=1622894582, taken_offset_minutes=120, camera_make="Canon",
                                       latitude=48.8582, longitude=2.2945)
    photo = images.encode(images.photo(16, 16), "JPEG")
    assert client.post("/api/images", files=[("files", ("p.jpg", photo, "image/jpeg"))]).status_code == 201
    [item] = fake.upserted
    assert item.facts == fake.facts and item.file_mtime_ns == 0  # an upload has no file time to tell


def test_an_upload_keeps_each_files_own_time(fake: FakeBackends, client: TestClient) -> None:
    first, second = (images.encode(images.photo(16, 16, seed=s), "JPEG") for s in (1, 2))
    r = client.post("/api/images", files=[("files", ("a.jpg", first, "image/jpeg")),
                                          ("files", ("b.jpg", second, "image/jpeg"))],
                    data={"last_modified": ["1625342400123", "0"]})
    assert r.status_code == 201, r.text
    assert [item.file_mtime_ns for item in fake.upserted] == [1_625_342_400_123_000_000, 0]


@pytest.mark.parametrize(("values", "words"), [
    (["-1"], "is negative"),
    (["99999999999999999"], "in the future"),
    (["1625342400123", "1625342400123"], "2 values for 1 files"),
    (["yesterday"], "valid integer"),
    (["1.5"], "valid integer"),
])
def test_a_bad_file_time_is_400_naming_it(fake: FakeBackends, client: TestClient, values: list[str],
                                          words: str) -> None:
    photo = images.encode(images.photo(16, 16), "JPEG")
    r = client.post("/api/images", files=[("files", ("p.jpg", photo, "image/jpeg"))], data={"last_modified": values})
    assert r.status_code == 400, r.text
    assert "last_modified" in r.json()["message"] and words in r.json()["message"], r.json()
    assert fake.upserted == [] and fake.embedded == []  # refused before any work


def test_the_file_time_is_documented(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    body = spec["paths"]["/api/images"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    fields = spec["components"]["schemas"][body.rsplit("/", 1)[1]]["properties"]
    assert "File.lastModified" in fields["last_modified"]["description"]
