"""The page's filters, sort by date, tag editing, viewer facts and new uploads, in real headless Chromium.

Real-service tests (the index's tags, facts, filters and date sort of issue 12); screenshots go to
.cache/screenshots/ like test_page.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedder_service.tests import images
from gateway.tests.photos import dated, store, when
from gateway.tests.test_page import ARGS, CHROMIUM, shot
from protos.semsearch.v1 import common_pb2
from tests.support.stack import Gateway, Stack

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
              pytest.mark.db]

DATES = ["2018-03-01T09:00:00+00:00", "2020-06-15T18:45:00+02:00", "2022-12-24T20:00:00-05:00", None,
         "2024-02-29T07:15:00+09:00"]
SETTLED = """() => document.getElementById('results').getAttribute('aria-busy') === 'false'
    && document.querySelector('.card, #empty:not([hidden])') !== null"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def photos(stack: Stack) -> dict[str, list[int]]:
    """Dated photos tagged 'page-dates' (one undated), photos to tag ('page-edit'), one with every fact."""
    cameras = ["Canon EOS5D", "Nikon D750", "Canon R6", "", "Fuji X100"]
    places = [(46.2, 6.15), None, (48.85, 2.35), None, (35.7, 139.7)]
    out = {"dates": [dated(stack, 8000 + i, taken, ["page-dates"], cameras[i], places[i])
                     for i, taken in enumerate(DATES)],
           "edit": [dated(stack, 8100 + i, None, ["page-edit"]) for i in range(4)]}
    facts = common_pb2.PhotoFacts(taken_at=when("2021-07-04T15:30:00+02:00"), taken_offset_minutes=120,
                                  camera_make="Canon", camera_model="Canon EOS 5D", latitude=46.2, longitude=6.15)
    out["facts"] = [store(stack, images.jpeg(400, 300, seed=8200), ["page-facts"], facts,
                          mtime_ns=1_700_000_000 * 10**9, file_name="facts.jpg")]
    return out


@pytest.fixture
def page(browser: object, gw: Gateway, photos: dict[str, list[int]]) -> Iterator[object]:
    """A fresh desktop-size page that fails the test on any CSP violation or script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.base = gw.url  # type: ignore[attr-defined]
    yield pg
    context.close()
    assert not problems, problems


def card_ids(pg: object) -> list[int]:
    return [int(i) for i in pg.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.id)")]  # type: ignore[attr-defined]


def wait_url(pg: object, fragment: str, present: bool = True) -> None:
    """Until the page's URL does (or does not) hold fragment and its search has settled."""
    test = f"location.search.includes({fragment!r}) === {'true' if present else 'false'}"
    pg.wait_for_function(f"() => {test} && ({SETTLED})()")  # type: ignore[attr-defined]


def api_ids(api: httpx.Client, **params: object) -> list[int]:
    r = api.get("/api/search", params={"k": 24, **params})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["hits"]]


def test_sort_by_date(page: object, api: httpx.Client, photos: dict[str, list[int]]) -> None:
    page.goto(f"{page.base}/?q=a+photo&tag=page-dates")  # type: ignore[attr-defined]
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    assert sorted(card_ids(page)) == sorted(photos["dates"])
    page.select_option("#sort-select", "date_desc")  # type: ignore[attr-defined]
    wait_url(page, "sort=date_desc")
    shown = card_ids(page)
    assert shown == api_ids(api, q="a photo", tag="page-dates", sort="date_desc") and shown
    taken = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.taken || '')")  # type: ignore[attr-defined]
    dated_part = [t for t in taken if t]
    assert dated_part == sorted(dated_part, reverse=True) and taken[:len(dated_part)] == dated_part  # undated last
    assert "newest first" in page.text_content("#status-text")  # type: ignore[attr-defined]
    shot(page, "12-sort-by-date")
    page.select_option("#sort-select", "date_asc")  # type: ignore[attr-defined]
    wait_url(page, "sort=date_asc")
    assert card_ids(page) == api_ids(api, q="a photo", tag="page-dates", sort="date_asc")
    page.reload()  # type: ignore[attr-defined]  # the order lives in the URL
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    assert page.input_value("#sort-select") == "date_asc"  # type: ignore[attr-defined]


def test_filters_by_date_tag_camera_and_place(page: object, api: httpx.Client, photos: dict[str, list[int]]) -> None:
    page.goto(f"{page.base}/?q=a+photo")  # type: ignore[attr-defined]
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    page.click("#open-filters")  # type: ignore[attr-defined]
    assert page.get_attribute("#open-filters", "aria-expanded") == "true"  # type: ignore[attr-defined]
    assert page.evaluate("document.activeElement.id") == "taken-from"  # type: ignore[attr-defined]
    choice = "#tag-choices input[value='page-dates']"
    page.wait_for_selector(choice)  # type: ignore[attr-defined]
    assert page.text_content(f"{choice} + label") == "page-dates (5)"  # type: ignore[attr-defined]
    page.check(choice)  # type: ignore[attr-defined]
    wait_url(page, "tag=page-dates")
    assert sorted(card_ids(page)) == sorted(photos["dates"])
    page.fill("#taken-from", "2020-01-01")  # type: ignore[attr-defined]
    wait_url(page, "taken_from=2020-01-01")
    newer = api_ids(api, q="a photo", tag="page-dates", taken_from="2020-01-01")
    assert card_ids(page) == newer and set(newer) == {photos["dates"][i] for i in (1, 2, 4)}
    page.fill("#taken-until", "2022-12-25")  # type: ignore[attr-defined]
    wait_url(page, "taken_until=2022-12-25")
    assert set(card_ids(page)) == {photos["dates"][1], photos["dates"][2]}
    assert "(3)" in page.text_content("#open-filters")  # type: ignore[attr-defined]
    page.fill("#camera-filter", "canon")  # type: ignore[attr-defined]
    wait_url(page, "camera=canon")
    assert set(card_ids(page)) == {photos["dates"][2]}
    page.fill("#camera-filter", "")  # type: ignore[attr-defined]
    page.fill("#taken-until", "")  # type: ignore[attr-defined]
    wait_url(page, "taken_until", present=False)
    page.select_option("#location-filter", "false")  # type: ignore[attr-defined]
    wait_url(page, "has_location=false")
    assert card_ids(page) == [photos["dates"][1]]  # from 2020 on, without a place
    page.select_option("#location-filter", "true")  # type: ignore[attr-defined]
    wait_url(page, "has_location=true")
    assert set(card_ids(page)) == {photos["dates"][2], photos["dates"][4]}
    shot(page, "13-filters")
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    assert page.is_hidden("#filter-panel") and page.evaluate("document.activeElement.id") == "open-filters"  # type: ignore[attr-defined]
    page.click("#open-filters")  # type: ignore[attr-defined]
    page.click("#clear-filters")  # type: ignore[attr-defined]
    wait_url(page, "tag=", present=False)
    assert "taken_from" not in page.url and "has_location" not in page.url  # type: ignore[attr-defined]


def test_select_results_and_edit_their_tags(page: object, api: httpx.Client, photos: dict[str, list[int]]) -> None:
    page.goto(f"{page.base}/?q=a+photo&tag=page-edit")  # type: ignore[attr-defined]
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    first, second = card_ids(page)[:2]
    page.click("#select-mode")  # type: ignore[attr-defined]
    assert page.get_attribute("#select-mode", "aria-pressed") == "true"  # type: ignore[attr-defined]
    page.click(".card >> nth=0")  # type: ignore[attr-defined]
    page.focus(".card >> nth=1")  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]  # by keyboard too
    assert page.is_hidden("#viewer")  # type: ignore[attr-defined]  # selecting, not viewing
    pressed = page.eval_on_selector_all(".card", "cs => cs.map(c => c.getAttribute('aria-pressed'))")  # type: ignore[attr-defined]
    assert pressed[:2] == ["true", "true"] and set(pressed[2:]) == {"false"}
    assert page.text_content("#selected-count") == "2 selected"  # type: ignore[attr-defined]
    page.fill("#tag-edit-input", "page-new, page-other")  # type: ignore[attr-defined]
    page.click("#tag-add")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('tag-edit-status').textContent.startsWith('Added')")  # type: ignore[attr-defined]
    assert "to 2 pictures" in page.text_content("#tag-edit-status")  # type: ignore[attr-defined]
    for image_id in (first, second):
        assert api.get(f"/api/images/{image_id}").json()["tags"] == ["page-edit", "page-new", "page-other"]
    card_tags = page.get_attribute(f".card[data-id='{first}']", "data-tags")  # type: ignore[attr-defined]
    assert card_tags.split("\n") == ["page-edit", "page-new", "page-other"]
    assert "page-new" in page.get_attribute(f".card[data-id='{first}'] img", "alt")  # type: ignore[attr-defined]
    shot(page, "14-tag-editing")

    page.click(f".card[data-id='{second}']")  # type: ignore[attr-defined]  # unselect the second
    page.fill("#tag-edit-input", "page-other")  # type: ignore[attr-defined]
    page.click("#tag-remove")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('tag-edit-status').textContent.startsWith('Removed')")  # type: ignore[attr-defined]
    assert api.get(f"/api/images/{first}").json()["tags"] == ["page-edit", "page-new"]
    assert api.get(f"/api/images/{second}").json()["tags"] == ["page-edit", "page-new", "page-other"]
    counts = {t["tag"]: t["count"] for t in api.get("/api/tags").json()}
    assert counts["page-new"] == 2 and counts["page-other"] == 1
    page.wait_for_function("() => [...document.querySelectorAll('#tag-choices label')]"  # type: ignore[attr-defined]
                           ".some(l => l.textContent === 'page-new (2)')")
    page.click("#select-mode")  # type: ignore[attr-defined]
    assert page.get_attribute(".card >> nth=0", "aria-pressed") is None  # type: ignore[attr-defined]
    page.click(".card >> nth=0")  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer[open]")  # type: ignore[attr-defined]  # a click opens the viewer again


def test_a_bad_tag_is_refused_on_the_page(page: object, photos: dict[str, list[int]]) -> None:
    page.goto(f"{page.base}/?q=a+photo&tag=page-edit")  # type: ignore[attr-defined]
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    page.click("#select-mode")  # type: ignore[attr-defined]
    page.click(".card >> nth=0")  # type: ignore[attr-defined]
    page.fill("#tag-edit-input", "x" * 101)  # type: ignore[attr-defined]
    page.click("#tag-add")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('tag-edit-status').textContent.includes('at most 100')")  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_viewer_shows_the_facts(page: object, photos: dict[str, list[int]], scheme: str) -> None:
    page.emulate_media(color_scheme=scheme)  # type: ignore[attr-defined]
    page.goto(f"{page.base}/?q=a+photo&tag=page-facts")  # type: ignore[attr-defined]
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    assert card_ids(page) == photos["facts"]
    page.click(".card >> nth=0")  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer[open]")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('viewer-meta').textContent.includes('Taken')")  # type: ignore[attr-defined]
    facts = dict(zip(page.eval_on_selector_all("#viewer-meta dt", "ds => ds.map(d => d.textContent)"),  # type: ignore[attr-defined]
                     page.eval_on_selector_all("#viewer-meta dd", "ds => ds.map(d => d.textContent)"),  # type: ignore[attr-defined]
                     strict=True))
    assert facts["Taken"] == "2021-07-04 15:30 (UTC+02:00)"
    assert facts["Camera"] == "Canon EOS 5D"
    assert facts["Place"] == "46.20000° N, 6.15000° E"
    assert facts["File modified"].startswith("2023-11-14 22:13 UTC") and "not when the picture was taken" in \
        facts["File modified"]
    assert facts["Tags"] == "page-facts"
    href = page.get_attribute("#viewer-place", "href")  # type: ignore[attr-defined]
    assert href.startswith("https://www.openstreetmap.org/?mlat=46.2&mlon=6.15")
    assert "OpenStreetMap" in page.get_attribute("#viewer-place", "aria-label")  # type: ignore[attr-defined]
    assert page.get_attribute("#viewer-meta time", "datetime") == "2021-07-04T15:30:00+02:00"  # type: ignore[attr-defined]
    shot(page, f"15-viewer-facts-{scheme}")


def test_an_upload_shows_the_new_pictures(page: object, api: httpx.Client, tmp_path: Path) -> None:
    files = [tmp_path / "quay.jpg", tmp_path / "pier.jpg"]
    for i, f in enumerate(files):
        f.write_bytes(images.jpeg(300, 200, seed=8300 + i))
    page.goto(f"{page.base}/?q=a+photo")  # type: ignore[attr-defined]
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    page.click("#open-upload")  # type: ignore[attr-defined]
    page.fill("#upload-tags", "page-upload, harbour ")  # type: ignore[attr-defined]
    page.set_input_files("#upload-files", [str(f) for f in files])  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('upload-summary').textContent.startsWith('Done')")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('status-text').textContent.includes('just added')")  # type: ignore[attr-defined]
    page.click("#uploader-close")  # type: ignore[attr-defined]
    shown = card_ids(page)
    assert len(shown) == 2 and "q=" not in page.url  # type: ignore[attr-defined]
    for image_id in shown:
        assert api.get(f"/api/images/{image_id}").json()["tags"] == ["harbour", "page-upload"]
    assert page.locator(".card .score").count() == 0  # type: ignore[attr-defined]  # no query, no score
    shot(page, "16-uploaded")
    page.click(".card >> nth=0")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('viewer-meta').textContent.includes('Tags')")  # type: ignore[attr-defined]
    assert "Score" not in page.text_content("#viewer-meta")  # type: ignore[attr-defined]
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer", state="hidden")  # type: ignore[attr-defined]
    # fill, not type: the page hands focus back to the card a moment after the viewer closes, and keys
    # typed in between would land there.
    page.fill("#q", "harbour")  # type: ignore[attr-defined]  # a search leaves the upload's view
    page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'harbour'")  # type: ignore[attr-defined]
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    assert "just added" not in page.text_content("#status-text")  # type: ignore[attr-defined]


def test_weak_matches_are_dimmed_not_hidden(page: object, api: httpx.Client, photos: dict[str, list[int]]) -> None:
    page.goto(f"{page.base}/?q=a+photo&tag=page-dates")  # type: ignore[attr-defined]
    page.wait_for_function(SETTLED)  # type: ignore[attr-defined]
    everything = card_ids(page)
    assert not page.query_selector(".card.below-cutoff")  # type: ignore[attr-defined]
    page.click("#open-filters")  # type: ignore[attr-defined]
    page.select_option("#cutoff-gap", "0.02")  # type: ignore[attr-defined]
    wait_url(page, "cutoff_gap=0.02")
    r = api.get("/api/search", params={"k": 24, "q": "a photo", "tag": "page-dates", "cutoff_gap": 0.02})
    hits = r.json()["hits"]
    weak = {h["id"] for h in hits if h["below_cutoff"]}
    assert weak and len(weak) < len(hits)  # the tiny model's scores spread wider than 0.02 over these photos
    assert card_ids(page) == everything  # nothing hidden
    dimmed = page.eval_on_selector_all(".card.below-cutoff", "cs => cs.map(c => +c.dataset.id)")  # type: ignore[attr-defined]
    assert set(dimmed) == weak and everything[0] not in weak
    shot(page, "13-weak-matches-dimmed")
