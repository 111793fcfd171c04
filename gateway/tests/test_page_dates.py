"""Dates on the page in real Chromium: cards show the photo's local day, uploads send the file's own time."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from embedder_service.tests import images
from gateway.tests import test_page
from gateway.tests.photos import store
from protos.semsearch.v1 import common_pb2, index_pb2
from tests.support.stack import Stack

browser, collection, page = test_page.browser, test_page.collection, test_page.page
NAME = "page_local_day"
TAKEN = 1625342400  # 2021-07-03T20:00:00Z: already 2021-07-04 at UTC+05:30, still 2021-07-03 at UTC-07:00


def test_cards_show_the_day_where_the_photo_was_taken(page: object, api: httpx.Client, stack: Stack) -> None:
    stats = api.get("/api/stats").json()
    stack.index.stub.CreateCollection(index_pb2.CreateCollectionRequest(
        name=NAME, model_id=stats["model_id"], dim=stats["dim"]), timeout=10)
    ids = {day: store(stack, images.jpeg(160, 120, seed=seed), ["dated"], facts, collection=NAME)
           for day, seed, facts in [
               ("2021-07-04", 6101, common_pb2.PhotoFacts(taken_at=TAKEN, taken_offset_minutes=330)),
               ("2021-07-03", 6102, common_pb2.PhotoFacts(taken_at=TAKEN, taken_offset_minutes=-420)),
               ("clock", 6103, common_pb2.PhotoFacts(taken_at=TAKEN))]}  # no zone: the camera's clock, as is
    page.goto(f"{page.base}/?collection={NAME}&q=picture")  # type: ignore[attr-defined]
    page.wait_for_function("n => document.querySelectorAll('.card .date').length === n", arg=len(ids))  # type: ignore[attr-defined]
    for day, image_id in ids.items():
        shown = page.text_content(f".card[data-id='{image_id}'] .date")  # type: ignore[attr-defined]
        want = "2021-07-03" if day == "clock" else day
        assert shown == want, (day, shown)
        assert f"taken {want}" in page.get_attribute(f".card[data-id='{image_id}'] img", "alt")  # type: ignore[attr-defined]


def test_an_upload_from_the_page_keeps_the_files_time(page: object, api: httpx.Client, tmp_path: Path) -> None:
    path = tmp_path / "from-the-camera-roll.jpg"
    path.write_bytes(images.jpeg(200, 150, seed=6201))
    os.utime(path, (1588748889, 1588748889))  # 2020-05-06T07:08:09Z
    page.goto(page.base)  # type: ignore[attr-defined]
    page.click("#open-upload")  # type: ignore[attr-defined]
    with page.expect_response(lambda r: r.url.endswith("/api/images") and r.request.method == "POST") as sent:  # type: ignore[attr-defined]
        page.set_input_files("#upload-files", str(path))  # type: ignore[attr-defined]
    assert sent.value.status == 201, sent.value.text()
    image_id = sent.value.json()["results"][0]["id"]
    assert api.get(f"/api/images/{image_id}").json()["file_modified_at"] == "2020-05-06T07:08:09Z"


def test_a_file_dated_years_ahead_still_uploads_without_its_time(page: object, api: httpx.Client,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "clock-set-wrong.jpg"
    path.write_bytes(images.jpeg(200, 150, seed=6202))
    os.utime(path, (4102444800, 4102444800))  # 2100-01-01: the API refuses times over a day ahead
    page.goto(page.base)  # type: ignore[attr-defined]
    page.click("#open-upload")  # type: ignore[attr-defined]
    with page.expect_response(lambda r: r.url.endswith("/api/images") and r.request.method == "POST") as sent:  # type: ignore[attr-defined]
        page.set_input_files("#upload-files", str(path))  # type: ignore[attr-defined]
    assert sent.value.status == 201, sent.value.text()
    assert "last_modified" not in (sent.value.request.post_data_buffer or b"").decode("latin-1")
    image_id = sent.value.json()["results"][0]["id"]
    assert api.get(f"/api/images/{image_id}").json().get("file_modified_at") in (None, "")
