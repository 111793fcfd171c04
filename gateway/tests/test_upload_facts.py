"""An upload stores what the embedder read from the file (its photo facts), through a fake of the services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from embedder_service.tests import images
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.tests.fakes import FakeBackends
from protos.semsearch.v1 import common_pb2


@pytest.fixture
def fake() -> FakeBackends:
    return FakeBackends(GatewayConfig())


@pytest.fixture
def client(fake: FakeBackends) -> Iterator[TestClient]:
    with TestClient(create_app(fake.config, connect=lambda _: fake)) as c:
        yield c


def test_an_upload_passes_the_embedders_facts_to_the_index(fake: FakeBackends, client: TestClient) -> None:
    fake.facts = common_pb2.PhotoFacts(taken_at=1622894582, taken_offset_minutes=120, camera_make="Canon",
                                       latitude=48.8582, longitude=2.2945)
    photo = images.encode(images.photo(16, 16), "JPEG")
    assert client.post("/api/images", files=[("files", ("p.jpg", photo, "image/jpeg"))]).status_code == 201
    [item] = fake.upserted
    assert item.facts == fake.facts and item.file_mtime_ns == 0  # an upload has no file time to tell
