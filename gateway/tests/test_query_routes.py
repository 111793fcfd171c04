"""The search routes against fakes: the vector a query makes, each refusal with its position, cursors, HEAD."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedder_service.tests import images
from gateway.app import create_app
from gateway.clients import Deadline
from gateway.config import GatewayConfig
from gateway.cursor import Signer
from gateway.tests.fakes import MODEL_ID, FakeBackends
from protos.semsearch.v1 import embedder_pb2, index_pb2


class Refusing(FakeBackends):
    """A fake embedder that refuses the texts in `refused`, item by item, as the real one refuses one too long."""

    refused: frozenset[str] = frozenset()

    async def embed_texts(self, texts: list[str], deadline: Deadline) -> embedder_pb2.EmbedTextsResponse:
        reply = await super().embed_texts(texts, deadline)
        for text, result in zip(texts, reply.results, strict=True):
            if text in self.refused:
                result.Clear()
                result.error.code, result.error.message = 3, "text is longer than 10 characters"
        return reply


@pytest.fixture
def fake() -> Refusing:
    return Refusing(GatewayConfig(max_depth=30, cursor_key="test-key"))


@pytest.fixture
def client(fake: Refusing) -> Iterator[TestClient]:
    with TestClient(create_app(fake.config, connect=lambda _: fake)) as c:
        yield c


def unit(v: object) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def sent(fake: FakeBackends) -> np.ndarray:
    """The vector of the last Search request."""
    request = fake.searches[-1]
    assert isinstance(request, index_pb2.SearchRequest)
    return np.asarray(request.vector, dtype=np.float32)


def image_search(client: TestClient, **params: Any) -> Any:  # the TestClient's response
    return client.post("/api/search/image", files={"file": ("q.jpg", images.jpeg(seed=5), "image/jpeg")},
                       params=params)


@pytest.mark.parametrize("q", ["a dog on a beach", "  a  dog\ton a beach  ", "t-shirt with a x-ray print"])
def test_a_plain_phrase_is_one_text_and_its_vector_unchanged(fake: Refusing, client: TestClient, q: str) -> None:
    r = client.get("/api/search", params={"q": q})
    assert r.status_code == 200, r.text
    assert fake.texts == [[q.strip()]]
    assert np.array_equal(sent(fake), np.asarray(fake.vector_of(q.strip()), dtype=np.float32))
    assert r.json()["truncated"] is False


def test_a_long_plain_phrase_still_says_it_was_cut(fake: Refusing, client: TestClient) -> None:
    q = "a very long description " * 5
    assert client.get("/api/search", params={"q": q}).json()["truncated"] is True
    assert fake.texts == [[q.strip()]]


def test_parts_are_embedded_in_one_batch_and_combined(fake: Refusing, client: TestClient) -> None:
    r = client.get("/api/search", params={"q": '"red car":2 -night bicycle'})
    assert r.status_code == 200, r.text
    assert fake.texts == [["red car", "night", "bicycle"]]
    v = {t: unit(fake.vector_of(t)) for t in ("red car", "night", "bicycle")}
    expected = unit(2 * v["red car"] - v["night"] + v["bicycle"])
    np.testing.assert_allclose(sent(fake), expected, atol=1e-6)
    assert r.json()["truncated"] is False


def test_an_example_image_is_one_more_part(fake: Refusing, client: TestClient) -> None:
    fake.vectors["night"] = [0.6, 0.8]  # the fake image's vector is [1, 0]: two values
    r = image_search(client, q="-night", weight=2.5)
    assert r.status_code == 200, r.text
    assert fake.texts == [["night"]] and fake.embedded == [1]
    np.testing.assert_allclose(sent(fake), unit(2.5 * np.array([1.0, 0.0]) - np.array([0.6, 0.8])), atol=1e-6)


def test_an_image_alone_keeps_its_vector(fake: Refusing, client: TestClient) -> None:
    assert image_search(client).status_code == 200
    assert fake.texts == [] and sent(fake).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(("q", "position"), [
    ("-people", 0), ("dog:", 3), ("dog:0", 3), ("dog:-1", 3), ("dog:nan", 3), ("dog:1e9", 3),
    (" + ".join(f"w{i}" for i in range(100)), 84), ('a "red car', 2), ("beach -", 6), ("beach --people", 7),
])
def test_a_query_that_does_not_parse_is_a_400_naming_the_position(fake: Refusing, client: TestClient, q: str,
                                                                  position: int) -> None:
    r = client.get("/api/search", params={"q": q})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["position"] == position and f"at position {position}" in body["message"]
    assert body["error"] == "bad_request" and fake.texts == [] and fake.searches == []


def test_parts_that_cancel_out_are_a_400_naming_the_subtracted_one(fake: Refusing, client: TestClient) -> None:
    r = client.get("/api/search", params={"q": "dog -dog"})
    assert (r.status_code, r.json()["position"]) == (400, 4), r.text
    assert "cancel" in r.json()["message"] and fake.searches == []


def test_a_part_the_embedder_refuses_is_a_400_naming_it(fake: Refusing, client: TestClient) -> None:
    fake.refused = frozenset({"an overly long part"})
    r = client.get("/api/search", params={"q": 'beach -"an overly long part"'})
    assert (r.status_code, r.json()["position"]) == (400, 6), r.text
    assert "longer than 10 characters" in r.json()["message"]


@pytest.mark.parametrize(("params", "words"), [
    ({"q": "dog:0"}, "at position 3"), ({"q": 'a "b'}, "at position 2"),
    ({"weight": 0}, "weight"), ({"weight": -1}, "weight"), ({"weight": "nan"}, "weight"),
    ({"weight": "inf"}, "weight"), ({"weight": 1e9}, "weight"), ({"weight": "x"}, "weight"),
])
def test_an_image_search_refuses_bad_words_and_weights(fake: Refusing, client: TestClient,
                                                      params: dict[str, object], words: str) -> None:
    r = image_search(client, **params)
    assert r.status_code == 400 and words in r.json()["message"], r.text
    assert fake.embedded == [] and fake.texts == []


def test_with_an_image_the_words_may_only_subtract(fake: Refusing, client: TestClient) -> None:
    fake.vectors["people"] = [0.0, 1.0]
    assert image_search(client, q="-people").status_code == 200
    np.testing.assert_allclose(sent(fake), unit([1.0, -1.0]), atol=1e-6)


def test_the_next_page_comes_from_the_cursor_without_embedding(fake: Refusing, client: TestClient) -> None:
    fake.corpus = 8
    first = client.get("/api/search", params={"q": "red car -night", "k": 3, "label": ["cars"],
                                              "min_score": 0.1, "collection": "main"}).json()
    assert [h["id"] for h in first["hits"]] == [1, 2, 3] and first["next"]
    vector = sent(fake)
    pages = [first]
    while pages[-1]["next"]:
        r = client.get("/api/search/next", params={"cursor": pages[-1]["next"]})
        assert r.status_code == 200, r.text
        pages.append(r.json())
    assert [[h["id"] for h in p["hits"]] for p in pages] == [[1, 2, 3], [4, 5, 6], [7, 8]]
    assert [(p["offset"], p["k"], p["has_more"]) for p in pages] == [(0, 3, True), (3, 3, True), (6, 3, False)]
    assert len(fake.texts) == 1  # only the first page embedded
    # Each later page asked the index for its own hits only, with the first page's vector, filter and floor.
    later = fake.searches[1:]
    assert [(s.offset, s.k) for s in later] == [(3, 3), (6, 3)]
    for s in later:
        assert isinstance(s, index_pb2.SearchRequest)
        assert np.array_equal(np.asarray(s.vector, dtype=np.float32), vector)
        assert (list(s.filter.labels), round(s.min_score, 6), s.model_id, s.collection) == (
            ["cars"], 0.1, MODEL_ID, "main")
    assert pages[1]["hits"][0]["thumbnail_url"] == "/images/4/thumb?collection=main"
    by_offset = client.get("/api/search", params={"q": "red car -night", "k": 3, "offset": 3, "label": ["cars"],
                                                  "min_score": 0.1, "collection": "main"}).json()
    assert by_offset["hits"] == pages[1]["hits"] and by_offset["next"]


def test_cursors_stop_at_the_depth_limit(fake: Refusing, client: TestClient) -> None:
    fake.corpus = 100  # max_depth is 30
    page = client.get("/api/search", params={"q": "x", "k": 12}).json()
    seen = []
    while page["next"]:
        seen.append((page["offset"], page["k"]))
        page = client.get("/api/search/next", params={"cursor": page["next"]}).json()
    seen.append((page["offset"], page["k"]))
    assert seen == [(0, 12), (12, 12), (24, 6)] and page["has_more"] is False


def test_similar_and_image_searches_page_by_cursor_too(fake: Refusing, client: TestClient) -> None:
    fake.corpus = 5
    first = client.get("/api/images/2/similar", params={"k": 2}).json()
    page = client.get("/api/search/next", params={"cursor": first["next"]}).json()
    assert [h["id"] for h in first["hits"]] == [1, 3] and [h["id"] for h in page["hits"]] == [4, 5]
    last = fake.searches[-1]
    assert isinstance(last, index_pb2.SearchSimilarRequest) and (last.id, last.offset, last.k) == (2, 2, 2)
    image_first = image_search(client, k=2).json()
    image_next = client.get("/api/search/next", params={"cursor": image_first["next"]}).json()
    assert [h["id"] for h in image_next["hits"]] == [3, 4] and fake.embedded == [1]


def test_the_truncated_flag_travels_with_the_cursor(fake: Refusing, client: TestClient) -> None:
    fake.corpus = 5
    first = client.get("/api/search", params={"q": "a very long description " * 5, "k": 2}).json()
    assert first["truncated"] is True
    assert client.get("/api/search/next", params={"cursor": first["next"]}).json()["truncated"] is True


def flip(cursor: str, at: int) -> str:
    return cursor[:at] + ("A" if cursor[at] != "A" else "B") + cursor[at + 1:]


def test_a_bad_or_tampered_cursor_is_a_400(fake: Refusing, client: TestClient) -> None:
    fake.corpus = 9
    good = client.get("/api/search", params={"q": "x", "k": 3}).json()["next"]
    foreign = Signer("another key").encode(index_pb2.SearchRequest(vector=[float("nan")] * 2, k=3, offset=3))
    too_deep = Signer("test-key").encode(index_pb2.SearchRequest(vector=[1.0, 0.0], k=3, offset=29))
    too_many = Signer("test-key").encode(index_pb2.SearchRequest(vector=[1.0, 0.0], k=500, offset=0))
    searched = len(fake.searches)
    for cursor in [flip(good, 10), flip(good, len(good) // 2), flip(good, len(good) - 1), good[:-4], good[8:],
                   good + "A", "", "x", "!!!!", "é" * 8, "A" * 40, foreign, too_deep, too_many]:
        r = client.get("/api/search/next", params={"cursor": cursor})
        assert r.status_code == 400 and r.json()["error"] == "bad_request", (cursor, r.text)
    assert client.get("/api/search/next").status_code == 400
    assert len(fake.searches) == searched  # none reached the index


def test_a_cursor_of_another_replica_with_the_same_key_works(fake: Refusing, client: TestClient) -> None:
    fake.corpus = 9
    cursor = Signer("test-key").encode(index_pb2.SearchRequest(vector=[0.6, 0.8], k=3, offset=3, model_id=MODEL_ID))
    r = client.get("/api/search/next", params={"cursor": cursor})
    assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == [4, 5, 6]


VOLATILE = {"/metrics", "/api/search?q=a+dog", "/api/images/3/similar"}  # bodies that differ call to call (timings)


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/healthz", "/readyz", "/metrics", "/api/stats",
                                  "/api/labels", "/api/collections", "/api/images/3", "/images/3",
                                  "/images/3/thumb", "/api/search?q=a+dog", "/api/images/3/similar",
                                  "/api/openapi.json", "/nothing-here", "/api/search?q=dog:0"])
def test_head_answers_wherever_get_does(client: TestClient, path: str) -> None:
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code and head.content == b""
    for name in ("content-type", "content-length", "etag", "cache-control", "content-security-policy"):
        if name == "content-length" and path in VOLATILE:
            assert int(head.headers[name]) > 0
        else:
            assert head.headers.get(name) == got.headers.get(name), name


def test_head_of_a_cached_image_is_a_304_and_head_of_a_post_route_a_405(client: TestClient) -> None:
    etag = client.get("/images/3").headers["etag"]
    assert client.head("/images/3", headers={"If-None-Match": etag}).status_code == 304
    r = client.head("/api/images")
    assert r.status_code == 405 and r.content == b""


def test_the_spec_documents_the_language_and_the_cursor(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    search = spec["paths"]["/api/search"]["get"]
    assert '-word' in search["description"] and "cursor" in search["description"]
    assert search["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/QueryErrorBody")
    image = spec["paths"]["/api/search/image"]["post"]
    assert {p["name"] for p in image["parameters"]} >= {"q", "weight"}
    following = spec["paths"]["/api/search/next"]["get"]
    assert [p["name"] for p in following["parameters"]] == ["cursor"]
    assert "next" in spec["components"]["schemas"]["SearchResult"]["properties"]
    assert "head" not in spec["paths"]["/images/{image_id}"]


class Streaming(Refusing):
    """A fake index whose originals come in many chunks, counting the chunks read."""

    read = 0

    async def open_image(self, image_id: int, thumbnail: bool, deadline: Deadline,
                         collection: str = "") -> tuple[index_pb2.ImageChunk, AsyncIterator[bytes]]:
        first = index_pb2.ImageChunk(data=b"x" * 1000, content_type="image/jpeg", total_size=1000 * 1000,
                                     sha256="ab")

        async def body() -> AsyncIterator[bytes]:
            for _ in range(1000):
                self.read += 1
                yield first.data
                await asyncio.sleep(0)

        return first, body()


def test_head_of_a_large_original_stops_its_stream() -> None:
    fake = Streaming(GatewayConfig())
    with TestClient(create_app(fake.config, connect=lambda _: fake)) as client:
        r = client.head("/images/3")
        assert (r.status_code, r.headers["content-length"], r.content) == (200, "1000000", b"")
        assert fake.read < 10
        assert len(client.get("/images/3").content) == 1000 * 1000 and fake.read > 1000


def test_head_requests_are_counted_under_their_route(client: TestClient) -> None:
    client.head("/api/stats")
    metrics = client.get("/metrics").text
    assert 'gateway_requests_total{method="HEAD",route="/api/stats",status="200"}' in metrics
