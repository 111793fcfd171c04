"""Filters, date sort, tags and facts through the HTTP API against the real services (tiny model, embedded Postgres).

Real-service tests: they need the index's tags, facts, filters and date sort (issue 12), and the upload's
EXIF test needs the embedder's facts too. Each test tags its own pictures, so the shared collection's
other pictures never get in the way.
"""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from embedder_service.tests import images
from gateway.tests.photos import dated, store, when
from gateway.tests.test_api import image_search, upload
from protos.semsearch.v1 import common_pb2
from tests.support.stack import Stack

pytestmark = pytest.mark.db

EVERYTHING = {"cutoff_gap": 2}  # every hit counts as relevant: the order is the dates' alone


def ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["hits"]]


def find(api: httpx.Client, **params: object) -> httpx.Response:
    return api.get("/api/search", params={"q": "a photo", "k": 50, **params})


def test_sort_by_date_and_the_date_range(api: httpx.Client, stack: Stack) -> None:
    tag = "api-dates"
    old = dated(stack, 7001, "2019-05-01T10:00:00+00:00", [tag])
    mid = dated(stack, 7002, "2021-07-04T15:30:00+02:00", [tag])
    new = dated(stack, 7003, "2023-01-10T08:00:00-05:00", [tag])
    undated = dated(stack, 7004, None, [tag])
    assert ids(find(api, tag=tag, sort="date_desc", **EVERYTHING)) == [new, mid, old, undated]
    assert ids(find(api, tag=tag, sort="date_asc", **EVERYTHING)) == [old, mid, new, undated]
    assert set(ids(find(api, tag=tag))) == {old, mid, new, undated}  # relevance: all of them, by score

    hits = {h["id"]: h for h in find(api, tag=tag).json()["hits"]}
    assert hits[mid]["taken_at"] == "2021-07-04T13:30:00Z" and hits[mid]["tags"] == [tag]
    assert hits[undated]["taken_at"] is None

    assert set(ids(find(api, tag=tag, taken_from="2020-01-01"))) == {mid, new}
    assert set(ids(find(api, tag=tag, taken_until="2021-07-04"))) == {old, mid}  # the whole day
    assert set(ids(find(api, tag=tag, taken_until="2021-07-04T13:30:00Z"))) == {old}  # "until" is before
    assert ids(find(api, tag=tag, taken_from="2021-07-04T15:30:00+02:00", taken_until="2021-07-05")) == [mid]

    # The other two search routes take the same parameters.
    assert ids(api.get(f"/api/images/{old}/similar", params={"tag": tag, "sort": "date_desc", **EVERYTHING})) == [
        new, mid, undated]
    by_example = image_search(api, images.jpeg(160, 120, seed=7002), tag=tag, sort="date_asc", **EVERYTHING)
    assert ids(by_example) == [old, mid, new, undated]


def test_a_relevance_cutoff_marks_or_drops_the_rest(api: httpx.Client, stack: Stack) -> None:
    tag = "api-cutoff"
    for seed in range(7101, 7105):
        dated(stack, seed, "2022-02-02T12:00:00+00:00", [tag])
    hits = find(api, tag=tag, cutoff_gap=0).json()["hits"]
    assert hits and hits[0]["below_cutoff"] is False
    assert all(h["below_cutoff"] for h in hits[1:])  # only the best is within a gap of 0 of itself
    by_date = find(api, tag=tag, sort="date_desc", cutoff_fraction=1).json()["hits"]
    assert [h["id"] for h in by_date] == [hits[0]["id"]]  # a date sort keeps only the relevant ones


def test_camera_location_and_box(api: httpx.Client, stack: Stack) -> None:
    tag = "api-places"
    geneva = dated(stack, 7201, "2020-01-01T12:00:00+01:00", [tag], "Canon EOS5D", (46.2, 6.15))
    tokyo = dated(stack, 7202, "2020-01-02T12:00:00+09:00", [tag], "Nikon D750", (35.7, 139.7))
    nowhere = dated(stack, 7203, None, [tag])
    fiji = dated(stack, 7204, None, [tag], "Fuji X100", (-17.8, 178.0))
    assert ids(find(api, tag=tag, camera="canon")) == [geneva]
    assert ids(find(api, tag=tag, camera="d750")) == [tokyo]
    assert ids(find(api, tag=tag, camera="Leica")) == []
    assert set(ids(find(api, tag=tag, has_location="true"))) == {geneva, tokyo, fiji}
    assert ids(find(api, tag=tag, has_location="false")) == [nowhere]
    assert ids(find(api, tag=tag, box="45,5,47,7")) == [geneva]
    assert ids(find(api, tag=tag, box="-20,170,-10,-170")) == [fiji]  # across the antimeridian
    assert find(api, tag=tag, box="50,5,47,7").status_code == 400


def test_tags_edited_listed_and_filtered(api: httpx.Client) -> None:
    first, second = images.jpeg(seed=7301), images.jpeg(seed=7302)
    r = api.post("/api/images", files=[("files", ("a.jpg", first, "image/jpeg")), ("files", ("b.jpg", second,
                                                                                                 "image/jpeg"))],
                 data={"tags": ["api-t1", " api-t0 "], "label": "api-label"})
    assert r.status_code == 201, r.text
    a, b = (o["id"] for o in r.json()["results"])
    assert api.get(f"/api/images/{a}").json()["tags"] == ["api-label", "api-t0", "api-t1"]  # the label is a tag too
    again = api.post("/api/images", files=[("files", ("a.jpg", first, "image/jpeg"))], data={"tags": "api-t2"})
    assert again.status_code == 200 and again.json()["results"][0]["outcome"] == "exists"
    assert api.get(f"/api/images/{a}").json()["tags"] == ["api-label", "api-t0", "api-t1", "api-t2"]

    edit = api.post("/api/tags", json={"ids": [a, b, 987654321], "add": ["api-x"], "remove": ["api-t1"]})
    assert edit.status_code == 200 and edit.json() == {"updated": sorted([a, b]), "missing": [987654321]}
    assert api.get(f"/api/images/{b}").json()["tags"] == ["api-label", "api-t0", "api-x"]
    counts = {t["tag"]: t["count"] for t in api.get("/api/tags").json()}
    assert counts["api-x"] == 2 and counts["api-t2"] == 1 and "api-t1" not in counts

    assert ids(find(api, tag=["api-x", "api-t2"], tags="all")) == [a]
    assert set(ids(find(api, tag=["api-x", "api-t2"], tags="any"))) == {a, b}
    hit = next(h for h in find(api, tag="api-t2").json()["hits"] if h["id"] == a)
    assert hit["tags"] == ["api-label", "api-t0", "api-t2", "api-x"]

    assert api.post("/api/tags", json={"ids": [987654321], "add": ["x"]}).status_code == 404
    bad = api.post("/api/tags", json={"ids": [a], "add": ["bad\x00tag"]})
    assert bad.status_code == 400 and "add" in bad.json()["message"]
    assert api.get(f"/api/images/{a}").json()["tags"] == ["api-label", "api-t0", "api-t2", "api-x"]


def test_image_metadata_carries_the_stored_facts(api: httpx.Client, stack: Stack) -> None:
    facts = common_pb2.PhotoFacts(taken_at=when("2021-07-04T15:30:00+02:00"), taken_offset_minutes=120,
                                  camera_make="Canon", camera_model="EOS 5D", latitude=46.2, longitude=6.15)
    image_id = store(stack, images.jpeg(seed=7401), ["api-facts"], facts, mtime_ns=1_700_000_000 * 10**9)
    body = api.get(f"/api/images/{image_id}").json()
    assert body["facts"]["taken_at"] == "2021-07-04T15:30:00+02:00"
    assert (body["facts"]["camera_make"], body["facts"]["camera_model"]) == ("Canon", "EOS 5D")
    assert (body["facts"]["latitude"], body["facts"]["longitude"]) == pytest.approx((46.2, 6.15))
    assert body["file_modified_at"] == "2023-11-14T22:13:20Z" and body["tags"] == ["api-facts"]


def exif_jpeg(seed: int) -> bytes:
    """A JPEG whose EXIF says: taken 2021-07-04 15:30 at +02:00 by a Canon EOS 5D at 46.2 N, 6.15 E."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x9011] = "2021:07:04 15:30:00", "+02:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (46.0, 12.0, 0.0), "E", (6.0, 9.0, 0.0)
    buf = io.BytesIO()
    images.photo(200, 150, seed=seed).save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def test_an_uploaded_photo_shows_what_its_exif_says(api: httpx.Client) -> None:
    r = upload(api, exif_jpeg(7501), names=["exif.jpg"])
    assert r.status_code == 201, r.text
    body = api.get(f"/api/images/{r.json()['results'][0]['id']}").json()
    assert body["facts"]["taken_at"] == "2021-07-04T15:30:00+02:00"
    assert (body["facts"]["camera_make"], body["facts"]["camera_model"]) == ("Canon", "EOS 5D")
    assert (body["facts"]["latitude"], body["facts"]["longitude"]) == pytest.approx((46.2, 6.15))
    assert body["file_modified_at"] is None  # a browser upload has no file time
