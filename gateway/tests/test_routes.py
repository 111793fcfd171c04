"""Routes against a fake of the services: how each failure reason reaches an HTTP client, and the limits used."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from fastapi.testclient import TestClient

from embedder_service.tests import images
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.limits import FALLBACK, Limits, LimitsCache, of_services
from gateway.tests.fakes import FakeBackends, bare_error, rpc_error
from protos.semsearch.v1 import embedder_pb2, index_pb2
from semsearch_common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)

RETRY_AFTER = 7


@pytest.fixture
def fake() -> FakeBackends:
    return FakeBackends(GatewayConfig(retry_after_s=RETRY_AFTER))


@pytest.fixture
def client(fake: FakeBackends) -> Iterator[TestClient]:
    with TestClient(create_app(fake.config, connect=lambda _: fake)) as c:
        yield c


def search(client: TestClient) -> tuple[int, dict[str, str], dict[str, object]]:
    r = client.get("/api/search", params={"q": "a dog"})
    return r.status_code, dict(r.headers), r.json()


@pytest.mark.parametrize(("method", "err", "status", "retry"), [
    ("EmbedTexts", ResourceExhausted("inference queue is full", reason=Reason.OVERLOADED), 429, True),
    ("Search", ResourceExhausted("request too large"), 413, False),
    ("Search", FailedPrecondition("the collection holds other-model@1"), 409, False),
    ("Search", FailedPrecondition("the vector has 3 values, not 2", reason=Reason.DIMENSION_MISMATCH), 409, False),
    ("Search", NotFound("no such thing"), 404, False),
    ("Search", InvalidArgument("k must be at most 1000"), 400, False),
    ("EmbedTexts", Unavailable("the model is loading", reason=Reason.MODEL_LOADING), 503, True),
    ("Search", Unavailable("the database is down"), 503, True),
    ("Search", Unavailable("stopping", reason=Reason.SHUTTING_DOWN), 503, True),
    ("Search", DeadlineExceeded("ran out of time in the database"), 504, False),
    ("Search", ServiceError("a bug"), 500, False),
])
def test_each_reason_has_its_status(fake: FakeBackends, client: TestClient, method: str, err: ServiceError,
                                    status: int, retry: bool) -> None:
    fake.failures[method] = rpc_error(err)
    got, headers, body = search(client)
    assert (got, body["status"]) == (status, status), body
    assert (headers.get("retry-after") == str(RETRY_AFTER)) is retry
    if status in (400, 404, 409, 413):
        assert body["message"] == str(err)  # the service's own words reach the client


@pytest.mark.parametrize("reason", [Reason.MEDIA_STORE_FULL, Reason.MEDIA_STORE_READ_ONLY])
def test_media_store_failures_are_507_on_every_file(fake: FakeBackends, client: TestClient, reason: Reason) -> None:
    code = ResourceExhausted if reason == Reason.MEDIA_STORE_FULL else FailedPrecondition
    fake.failures["Upsert"] = rpc_error(code("the media store cannot take files", reason=reason))
    files = [("files", (f"p{i}.jpg", images.jpeg(seed=i), "image/jpeg")) for i in range(2)]
    r = client.post("/api/images", files=files)
    assert r.status_code == 507 and r.json()["error"] == "insufficient_storage"
    assert [o["status"] for o in r.json()["results"]] == [507, 507]
    assert "media store" in r.json()["message"]


def test_the_reason_decides_not_the_code_or_the_words(fake: FakeBackends, client: TestClient) -> None:
    # One code, two meanings: only the reason tells "busy" from "too large".
    fake.failures["EmbedTexts"] = rpc_error(ResourceExhausted("full", reason=Reason.OVERLOADED))
    assert search(client)[0] == 429
    fake.failures["EmbedTexts"] = rpc_error(ResourceExhausted("full", reason=Reason.TOO_LARGE))
    assert search(client)[0] == 413
    # Neither the old custom trailer nor the words of a message make a storage error.
    fake.failures.pop("EmbedTexts")
    fake.failures["Search"] = bare_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "storage is full",
                                         (("semsearch-error", "storage"),))
    assert search(client)[0] == 413


@pytest.mark.parametrize(("code", "status", "retry"), [
    (grpc.StatusCode.UNAVAILABLE, 503, True),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504, False),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 413, False),  # gRPC's own message-size check
    (grpc.StatusCode.FAILED_PRECONDITION, 409, False),
    (grpc.StatusCode.CANCELLED, 503, True),
    (grpc.StatusCode.UNKNOWN, 500, False),
])
def test_without_a_reason_the_code_decides(fake: FakeBackends, client: TestClient, code: grpc.StatusCode,
                                           status: int, retry: bool) -> None:
    fake.failures["Search"] = bare_error(code, "failed to connect to all addresses")
    got, headers, _ = search(client)
    assert got == status and ("retry-after" in headers) is retry


def test_errors_of_other_routes(fake: FakeBackends, client: TestClient) -> None:
    fake.failures["Get"] = rpc_error(NotFound("no image with id 5"))
    assert client.get("/api/images/5").status_code == 404
    fake.failures["GetImage"] = rpc_error(Unavailable("the database is down"))
    r = client.get("/images/5")
    assert r.status_code == 503 and r.headers["retry-after"] == str(RETRY_AFTER)
    fake.failures["GetModelInfo"] = rpc_error(Unavailable("loading", reason=Reason.MODEL_LOADING))
    assert client.get("/api/stats").status_code == 503


def test_uploads_are_batched_by_the_published_limits(fake: FakeBackends, client: TestClient) -> None:
    fake.published = Limits(max_images=3, max_message_bytes=64 * 1024 * 1024)
    files = [("files", (f"p{i}.png", images.encode(images.photo(16, 16, seed=i), "PNG"), "image/png"))
             for i in range(7)]
    r = client.post("/api/images", files=files)
    assert r.status_code == 201 and r.json()["created"] == 7
    assert fake.embedded == [3, 3, 1] and fake.stored == [3, 3, 1]
    # A byte limit that holds one file's allowance at a time sends each file alone.
    fake.embedded.clear()
    fake.published = Limits(max_images=100, max_message_bytes=1024 * 1024)
    assert client.post("/api/images", files=files[:3]).status_code == 201
    assert fake.embedded == [1, 1, 1]


def test_limits_come_from_the_services_with_a_fallback() -> None:
    # Until the protos carry the limit fields (or when a service leaves them 0), the fallback holds.
    assert of_services(embedder_pb2.ModelInfo(), index_pb2.StatsResponse()) == FALLBACK

    class Published:
        max_images_per_request, max_upsert_items = 256, 1024
        max_message_bytes = 64 * 1024 * 1024

    assert of_services(Published(), Published()) == Limits(256, 64 * 1024 * 1024)  # type: ignore[arg-type]


def test_limits_are_cached_and_a_failed_fetch_falls_back() -> None:
    calls = 0

    async def fetch() -> Limits:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("index down")
        return Limits(5, 1000)

    async def run() -> list[Limits]:
        cache = LimitsCache(ttl_s=60)
        return [await cache.get(fetch) for _ in range(3)]

    assert asyncio.run(run()) == [FALLBACK, Limits(5, 1000), Limits(5, 1000)] and calls == 2


def test_collections_are_listed(client: TestClient) -> None:
    r = client.get("/api/collections")
    assert r.status_code == 200
    assert r.json() == [{"name": "main", "model_id": "fake-model@1", "dim": 2, "count": 0, "aliases": ["default"]}]


def test_the_collection_reaches_every_index_call(fake: FakeBackends, client: TestClient) -> None:
    params = {"collection": "second"}
    assert client.get("/api/search", params={"q": "a dog", **params}).status_code == 200
    assert client.get("/api/images/3/similar", params=params).status_code == 200
    jpeg = images.jpeg(seed=1)
    assert client.post("/api/search/image", params=params,
                       files={"file": ("q.jpg", jpeg, "image/jpeg")}).status_code == 200
    assert client.post("/api/images", data=params, files={"files": ("p.jpg", jpeg, "image/jpeg")}).status_code == 201
    assert client.get("/api/labels", params=params).status_code == 200
    stats = client.get("/api/stats", params=params)
    assert stats.status_code == 200 and stats.json()["collection"] == "second"
    info = client.get("/api/images/3", params=params)
    assert info.status_code == 200 and info.json()["thumbnail_url"] == "/images/3/thumb?collection=second"
    assert client.get("/images/3/thumb", params=params).status_code == 200
    assert client.delete("/api/images/3", params=params).status_code == 200
    assert fake.asked == [(m, "second") for m in ("Search", "SearchSimilar", "Search", "Upsert", "ListLabels",
                                                    "Stats", "Get", "GetImage", "Delete")]
    assert client.get("/api/search", params={"q": "a dog"}).status_code == 200
    assert fake.asked[-1] == ("Search", "")  # no parameter: the index's alias "default"


@pytest.mark.parametrize("name", ["Second", "1st", "a-b", "x" * 41, "a b"])
def test_a_bad_collection_name_is_400(fake: FakeBackends, client: TestClient, name: str) -> None:
    for r in (client.get("/api/search", params={"q": "a dog", "collection": name}),
              client.get("/api/labels", params={"collection": name}),
              client.post("/api/images", data={"collection": name},
                          files={"files": ("p.jpg", images.jpeg(seed=1), "image/jpeg")})):
        assert r.status_code == 400, r.text
    assert fake.asked == []


def test_a_model_mismatch_names_both_models(fake: FakeBackends, client: TestClient) -> None:
    fake.catalog.append(index_pb2.Collection(name="multi", model_id="mclip@1", dim=512))
    fake.failures["Search"] = rpc_error(FailedPrecondition("collection 'multi' holds model 'mclip@1'"))
    r = client.get("/api/search", params={"q": "a dog", "collection": "multi"})
    assert r.status_code == 409
    assert "made with model mclip@1" in r.json()["message"] and "embedder serves fake-model@1" in r.json()["message"]


def test_an_unknown_collection_is_404(fake: FakeBackends, client: TestClient) -> None:
    fake.failures["ListLabels"] = rpc_error(NotFound("no collection or alias 'nope'"))
    r = client.get("/api/labels", params={"collection": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["message"]
