"""The HTTP API against the real embedder (tiny model) and the real index (embedded Postgres)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from embedder_service.tests import images
from protos.semsearch.v1 import index_pb2
from tests.support.stack import Stack


def upload(client: httpx.Client, *datas: bytes, label: str = "", names: list[str] | None = None,
           headers: dict[str, str] | None = None) -> httpx.Response:
    names = names or [f"pic{i}.jpg" for i in range(len(datas))]
    files = [("files", (n, d, "image/jpeg")) for n, d in zip(names, datas, strict=True)]
    return client.post("/api/images", files=files, data={"label": label} if label else {}, headers=headers or {})


def image_search(client: httpx.Client, data: bytes, **params: object) -> httpx.Response:
    return client.post("/api/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, params=params)


def test_upload_find_similar_delete(api: httpx.Client) -> None:
    data = images.jpeg(320, 240, seed=101)
    first = upload(api, data, label="roundtrip")
    assert first.status_code == 201, first.text
    result = first.json()["results"][0]
    assert result["outcome"] == "created" and result["sha256"] == hashlib.sha256(data).hexdigest()
    image_id = result["id"]
    again = upload(api, data, label="roundtrip")
    assert again.status_code == 200 and again.json()["results"][0] == {**result, "outcome": "exists", "status": 200}
    upload(api, images.jpeg(seed=102), images.jpeg(seed=103), label="roundtrip")

    found = image_search(api, data, k=5).json()
    assert found["hits"][0]["id"] == image_id and found["hits"][0]["score"] > 0.999
    assert found["hits"][0]["thumbnail_url"] == f"/images/{image_id}/thumb"
    assert found["timings"]["embed_ms"] > 0 and found["timings"]["search_ms"] > 0

    similar = api.get(f"/api/images/{image_id}/similar", params={"k": 50}).json()["hits"]
    assert similar and image_id not in [h["id"] for h in similar]

    meta = api.get(f"/api/images/{image_id}").json()
    assert (meta["width"], meta["height"], meta["label"], meta["file_name"]) == (320, 240, "roundtrip", "pic0.jpg")

    assert api.delete(f"/api/images/{image_id}").json() == {"deleted": image_id}
    assert api.get(f"/api/images/{image_id}").status_code == 404
    assert api.get(f"/images/{image_id}").status_code == 404
    assert api.delete(f"/api/images/{image_id}").status_code == 404
    after = image_search(api, data, k=5).json()["hits"]
    assert image_id not in [h["id"] for h in after]


def test_original_and_thumbnail_are_served_with_caching(api: httpx.Client) -> None:
    data = images.encode(images.photo(400, 300, seed=111), "PNG")
    image_id = upload(api, data, names=["p.png"]).json()["results"][0]["id"]
    original = api.get(f"/images/{image_id}")
    assert original.status_code == 200 and original.content == data
    assert original.headers["content-type"] == "image/png"
    assert original.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert "immutable" in original.headers["cache-control"] and "max-age=31536000" in original.headers["cache-control"]
    assert original.headers["x-content-type-options"] == "nosniff"
    cached = api.get(f"/images/{image_id}", headers={"If-None-Match": original.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""
    thumb = api.get(f"/images/{image_id}/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.headers["etag"] != original.headers["etag"]
    with Image.open(io.BytesIO(thumb.content)) as im:
        assert im.format == "JPEG" and max(im.size) <= 320


def test_text_search_pages_filters_and_reports_timings(api: httpx.Client) -> None:
    upload(api, *[images.jpeg(seed=200 + i) for i in range(6)], label="paging")
    upload(api, *[images.jpeg(seed=300 + i) for i in range(3)], label="other-label")
    full = api.get("/api/search", params={"q": "a red bicycle", "k": 8})
    assert full.status_code == 200
    body = full.json()
    assert len(body["hits"]) == 8 and body["has_more"]
    assert set(body["timings"]) == {"embed_ms", "search_ms", "database_ms", "total_ms"}
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    page2 = api.get("/api/search", params={"q": "a red bicycle", "k": 4, "offset": 4}).json()
    assert [h["id"] for h in page2["hits"]] == [h["id"] for h in body["hits"][4:]]
    only = api.get("/api/search", params={"q": "a red bicycle", "k": 50, "label": "other-label"}).json()["hits"]
    assert len(only) == 3 and {h["label"] for h in only} == {"other-label"}
    floor = scores[3]
    above = api.get("/api/search", params={"q": "a red bicycle", "k": 50, "min_score": floor}).json()["hits"]
    assert above and min(h["score"] for h in above) >= floor - 1e-4
    long_query = api.get("/api/search", params={"q": " ".join(["word"] * 150), "k": 3}).json()
    assert long_query["truncated"] is True and body["truncated"] is False
    nobody = api.get("/api/search", params={"q": "a red bicycle", "label": "no-such-label"})
    assert nobody.status_code == 200 and nobody.json()["hits"] == [] and not nobody.json()["has_more"]
    labels = {row["label"]: row["count"] for row in api.get("/api/labels").json()}
    assert labels["other-label"] == 3 and labels["paging"] == 6


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"q": ""}, 400, "empty"),
    ({"q": "   "}, 400, "empty"),
    ({}, 400, "q"),
    ({"q": "x" * 1001}, 413, "1000"),
    ({"q": "dog", "k": 0}, 400, "k"),
    ({"q": "dog", "k": "many"}, 400, "k"),
    ({"q": "dog", "k": 201}, 400, "k"),
    ({"q": "dog", "offset": -1}, 400, "offset"),
    ({"q": "dog", "offset": 990, "k": 20}, 400, "offset"),
    ({"q": "dog", "min_score": 2}, 400, "min_score"),
    ({"q": "dog", "min_score": "nan"}, 400, "min_score"),
    ({"q": "dog\x00"}, 400, "control"),
    ({"q": "dog", "label": "a\x00b"}, 400, "control"),
])
def test_bad_search_parameters(api: httpx.Client, params: dict[str, object], status: int, words: str) -> None:
    r = api.get("/api/search", params=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and words in body["message"]


@pytest.mark.parametrize("path", ["/api/images/987654321", "/api/images/987654321/similar", "/images/987654321",
                                  "/images/987654321/thumb"])
def test_unknown_ids_are_404(api: httpx.Client, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 404 and "987654321" in r.json()["message"]


@pytest.mark.parametrize("path", ["/api/images/0", "/api/images/-3", "/api/images/abc", "/images/99999999999999999999"])
def test_malformed_ids_are_400(api: httpx.Client, path: str) -> None:
    assert api.get(path).status_code == 400


def test_unknown_route_and_method_are_json(api: httpx.Client) -> None:
    r = api.get("/api/nothing-here")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = api.put("/api/search")
    assert r.status_code == 405 and r.json()["status"] == 405


def test_bad_uploads_fail_alone_with_the_right_code(stack: Stack) -> None:
    gw = stack.gateway(max_file_mb=0.5, max_files=64)
    good = images.jpeg(seed=401)
    truncated = images.jpeg(400, 300, seed=402)[:1500]
    huge = images.encode(images.photo(1200, 900, seed=403), "PNG")
    assert len(huge) > 0.5 * 1024 * 1024
    files = {"good.jpg": good, "empty.jpg": b"", "notes.jpg": b"just some text, not a picture\n",
             "truncated.jpg": truncated, "bomb.png": images.pixel_bomb_png(), "huge.png": huge}
    r = upload(gw.client, *files.values(), names=list(files))
    assert r.status_code == 201, r.text
    by_name = {o["file"]: o for o in r.json()["results"]}
    assert [o["file"] for o in r.json()["results"]] == list(files)
    assert by_name["good.jpg"]["outcome"] == "created"
    assert {n: by_name[n]["status"] for n in files if n != "good.jpg"} == {
        "empty.jpg": 400, "notes.jpg": 415, "truncated.jpg": 400, "bomb.png": 413, "huge.png": 413}
    assert r.json()["failed"] == 5 and r.json()["created"] == 1
    # A request of only bad files takes the status of its (first) failure.
    assert upload(gw.client, b"GIF? no, text", names=["a.gif"]).status_code == 415
    assert upload(gw.client, images.pixel_bomb_png(), names=["b.png"]).status_code == 413
    # The search-by-example endpoint refuses the same files.
    assert image_search(gw.client, b"hello").status_code == 415
    assert image_search(gw.client, truncated).status_code == 400
    assert image_search(gw.client, images.pixel_bomb_png()).status_code == 413
    assert image_search(gw.client, b"").status_code == 400


def test_too_many_files_and_too_large_bodies_are_413(stack: Stack) -> None:
    gw = stack.gateway(max_files=64, max_request_mb=2)
    tiny = images.encode(images.photo(16, 16, seed=5), "PNG")
    many = upload(gw.client, *[tiny] * 100)
    assert many.status_code == 413 and "64" in many.json()["message"]
    blob = images.encode(images.photo(1500, 1000, seed=6), "PNG")
    assert len(blob) > 2 * 1024 * 1024
    big = upload(gw.client, blob)
    assert big.status_code == 413 and "limit" in big.json()["message"]

    body = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + blob + b"\r\n--xyz--\r\n")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold on the streamed body too
        for start in range(0, len(body), 65536):
            yield body[start:start + 65536]

    streamed = gw.client.post("/api/search/image", content=chunks(),
                              headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert streamed.status_code == 413
    assert upload(gw.client, tiny).status_code in (200, 201)  # and the gateway still serves


def test_many_files_in_one_request_are_all_stored(api: httpx.Client) -> None:
    datas = [images.encode(images.photo(40, 30, seed=5000 + i), "PNG") for i in range(40)]  # > one batch
    r = upload(api, *datas, label="many")
    assert r.status_code == 201 and r.json()["created"] == 40
    ids = [o["id"] for o in r.json()["results"]]
    assert len(set(ids)) == 40
    assert image_search(api, datas[37], k=1).json()["hits"][0]["id"] == ids[37]


def test_missing_or_malformed_multipart_is_400(api: httpx.Client) -> None:
    assert api.post("/api/images").status_code == 400
    assert api.post("/api/search/image", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 400
    r = api.post("/api/images", content=b"--zz\r\ngarbage",
                 headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 400


def test_label_and_source_limits(api: httpx.Client) -> None:
    assert upload(api, images.jpeg(seed=501), label="x" * 201).status_code == 400
    assert upload(api, images.jpeg(seed=501), label="bad\x00label").status_code == 400


def test_deadline_exceeded_is_504(stack: Stack) -> None:
    gw = stack.gateway(search_deadline_s=0.0005)
    r = gw.client.get("/api/search", params={"q": "anything at all"})
    assert r.status_code == 504 and "in time" in r.json()["message"]


def test_stats_health_metrics_and_spec(api: httpx.Client) -> None:
    stats = api.get("/api/stats").json()
    assert stats["backend"] == "pgvector" and stats["precision"] == "fp32"
    assert stats["providers"] == ["CPUExecutionProvider"] and stats["semantic"] is False
    assert stats["count"] >= 0 and stats["write_token_required"] is False
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"ready": True, "embedder": True, "index": True}
    api.get("/api/search", params={"q": "metrics please"})
    metrics = api.get("/metrics").text
    assert 'gateway_requests_total{method="GET",route="/api/search",status="200"}' in metrics
    assert 'gateway_backend_calls_total{backend="embedder",code="OK",method="EmbedTexts"}' in metrics
    assert 'gateway_backend_seconds_count{backend="index",method="Search"}' in metrics
    spec = api.get("/api/openapi.json").json()
    for path in ("/api/search", "/api/search/image", "/api/images", "/api/images/{image_id}",
                 "/api/images/{image_id}/similar", "/images/{image_id}", "/images/{image_id}/thumb", "/api/labels",
                 "/api/stats", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path


def test_security_headers_everywhere(api: httpx.Client) -> None:
    for path in ("/", "/static/app.js", "/api/search?q=", "/api/stats", "/nope"):
        headers = api.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    page = api.get("/").text
    assert "<script>" not in page and "onclick" not in page and "style=" not in page


def create_collection(stack: Stack, name: str, model_id: str, dim: int) -> None:
    """A new empty collection, made through the index's own API (the gateway only reads the catalog)."""
    stack.index.stub.CreateCollection(index_pb2.CreateCollectionRequest(name=name, model_id=model_id, dim=dim),
                                      timeout=10)


def test_two_collections_answer_apart(api: httpx.Client, stack: Stack) -> None:
    stats = api.get("/api/stats").json()
    create_collection(stack, "api_second", stats["model_id"], stats["dim"])
    listed = {c["name"]: c for c in api.get("/api/collections").json()}
    assert listed["api_second"] == {"name": "api_second", "model_id": stats["model_id"], "dim": stats["dim"],
                                    "count": 0, "aliases": []}
    assert "default" in listed[stats["collection"]]["aliases"]

    in_default, in_second = images.jpeg(seed=1301), images.jpeg(seed=1302)
    assert upload(api, in_default, label="only-default").status_code == 201
    r = api.post("/api/images", files=[("files", ("s.jpg", in_second, "image/jpeg"))],
                 data={"label": "only-second", "collection": "api_second"})
    assert r.status_code == 201, r.text
    second_id = r.json()["results"][0]["id"]

    hits = api.get("/api/search", params={"q": "a photo", "k": 50, "collection": "api_second"}).json()["hits"]
    assert [h["id"] for h in hits] == [second_id]
    # The image lives in api_second only: its bytes and metadata are found there, through the hit's own URLs.
    assert api.get(hits[0]["thumbnail_url"]).status_code == 200
    assert api.get(hits[0]["image_url"]).content == in_second
    assert api.get(f"/api/images/{second_id}", params={"collection": "api_second"}).json()["label"] == "only-second"
    assert api.get(f"/api/images/{second_id}").status_code == 404
    default_hits = api.get("/api/search", params={"q": "a photo", "k": 50}).json()["hits"]
    assert second_id not in [h["id"] for h in default_hits]
    assert "only-second" not in [h["label"] for h in default_hits]
    by_image = image_search(api, in_second, k=5, collection="api_second").json()["hits"]
    assert by_image[0]["id"] == second_id
    assert [lb["label"] for lb in api.get("/api/labels", params={"collection": "api_second"}).json()] == [
        "only-second"]
    assert "only-second" not in [lb["label"] for lb in api.get("/api/labels").json()]
    second = api.get("/api/stats", params={"collection": "api_second"}).json()
    assert (second["collection"], second["count"]) == ("api_second", 1)
    assert api.get(f"/api/images/{second_id}/similar", params={"collection": "api_second"}).json()["hits"] == []


def test_a_collection_of_another_model_is_409_naming_both(api: httpx.Client, stack: Stack) -> None:
    stats = api.get("/api/stats").json()
    create_collection(stack, "api_other", "someone-else@7", stats["dim"])
    r = api.get("/api/search", params={"q": "a dog", "collection": "api_other"})
    assert r.status_code == 409, r.text
    assert r.json()["message"] == (f"this collection (api_other) was made with model someone-else@7 "
                                   f"({stats['dim']} dimensions); the embedder serves {stats['model_id']}")
    assert api.get("/api/search", params={"q": "a dog", "collection": "nowhere"}).status_code == 404
    assert api.get("/api/search", params={"q": "a dog", "collection": "Bad-Name"}).status_code == 400
