"""Page changes of issue 13 in real Chromium: the viewer's display rendition, the phone upload list, the query help."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedder_service.tests import images
from gateway.tests import test_page
from gateway.tests.test_page import search, shot
from tests.support.stack import Gateway

# The page tests' fixtures: one Chromium per module, the labelled pictures, a fresh page failing on script errors.
browser, collection, page = test_page.browser, test_page.collection, test_page.page

OUTCOMES_IN_VIEW = """() => [...document.querySelectorAll('#upload-list .outcome')].map(o => {
    const r = o.getBoundingClientRect(), list = document.getElementById('upload-list').getBoundingClientRect();
    return {text: o.textContent, left: r.left, right: r.right, width: r.width, listLeft: list.left,
            listRight: list.right, viewport: innerWidth}; })"""


@pytest.fixture
def phone(browser: object, gw: Gateway) -> Iterator[object]:
    """A 390 px wide phone page."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,  # type: ignore[attr-defined]
                                  is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.base = gw.url  # type: ignore[attr-defined]
    yield pg
    context.close()


def test_viewer_shows_the_display_rendition_and_links_the_original(page: object, api: httpx.Client) -> None:
    page.goto(page.base)  # type: ignore[attr-defined]
    search(page, "a harbour at dawn")
    first_id = page.get_attribute(".card >> nth=0", "data-id")  # type: ignore[attr-defined]
    page.click(".card >> nth=0")  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer[open]")  # type: ignore[attr-defined]
    # The display route may be missing on an older gateway: then the page falls back to the original.
    served = api.get(f"/images/{first_id}/display").status_code == 200
    wanted = f"/images/{first_id}/display" if served else f"/images/{first_id}"
    page.wait_for_function("w => new URL(document.getElementById('viewer-img').src).pathname === w",  # type: ignore[attr-defined]
                           arg=wanted)
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth > 0")  # type: ignore[attr-defined]
    link = page.locator("#viewer-original")  # type: ignore[attr-defined]
    assert link.is_visible() and link.text_content().strip() == "Open original"
    assert link.get_attribute("href") == f"/images/{first_id}"
    assert api.get(link.get_attribute("href")).status_code == 200


def test_phone_upload_list_shows_every_outcome(phone: object, tmp_path: Path) -> None:
    files = []
    for i, name in enumerate(["a-very-long-file-name-from-a-phone-camera-IMG_20260101_123456789_HDR.jpg",
                              "holiday.jpg", "another-long-name-that-is-not-a-picture-at-all.jpg"]):
        path = tmp_path / name
        path.write_bytes(b"not pixels" if i == 2 else images.jpeg(200, 150, seed=5100 + i))
        files.append(str(path))
    files.append(str(tmp_path / "holiday-again.jpg"))
    Path(files[-1]).write_bytes(Path(files[1]).read_bytes())  # the same picture: "Already there"
    phone.goto(phone.base)  # type: ignore[attr-defined]
    phone.click("#open-upload")  # type: ignore[attr-defined]
    phone.set_input_files("#upload-files", files)  # type: ignore[attr-defined]
    phone.wait_for_function("() => document.getElementById('upload-summary').textContent.startsWith('Done')")  # type: ignore[attr-defined]
    outcomes = phone.evaluate(OUTCOMES_IN_VIEW)  # type: ignore[attr-defined]
    assert [o["text"] for o in outcomes][:1] == ["Added"] and len(outcomes) == 4
    assert {o["text"] for o in outcomes} >= {"Added", "Failed (415)"}
    for o in outcomes:
        assert o["width"] > 0, o
        assert 0 <= o["left"] and o["right"] <= o["viewport"], f"outcome cut off by the screen: {o}"
        assert o["listLeft"] <= o["left"] and o["right"] <= o["listRight"], f"outcome cut off by the list: {o}"
    assert phone.evaluate("document.getElementById('upload-list').scrollWidth <= "  # type: ignore[attr-defined]
                          "document.getElementById('upload-list').clientWidth")
    shot(phone, "21-phone-upload")


def test_query_help_is_on_the_page(page: object) -> None:
    page.goto(page.base)  # type: ignore[attr-defined]
    summary = page.locator("#query-help summary")  # type: ignore[attr-defined]
    assert summary.is_visible()
    assert page.locator("#query-help-body").is_hidden()  # type: ignore[attr-defined]
    summary.focus()
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    body = page.locator("#query-help-body")  # type: ignore[attr-defined]
    assert body.is_visible()
    text = body.text_content()
    for example in ("beach -people", "sunset + mountains", "dog:2 cat", '"'):
        assert example in text, example
    shot(page, "22-query-help")


def test_words_change_an_example_image(page: object, api: httpx.Client, collection: dict[int, bytes],
                                       tmp_path: Path) -> None:
    example = tmp_path / "example.jpg"
    example.write_bytes(next(iter(collection.values())))
    page.goto(page.base)  # type: ignore[attr-defined]
    plain = page.get_attribute("#q", "placeholder")  # type: ignore[attr-defined]
    page.set_input_files("#query-file", str(example))  # type: ignore[attr-defined]
    page.wait_for_selector(".card")  # type: ignore[attr-defined]
    assert "Add words to the example" in page.get_attribute("#q", "placeholder")  # type: ignore[attr-defined]
    with page.expect_response(lambda r: "/api/search/image?" in r.url and "q=at+night" in r.url) as answer:  # type: ignore[attr-defined]
        page.type("#q", "at night", delay=15)  # type: ignore[attr-defined]
    assert answer.value.status == 200
    page.wait_for_function("() => document.getElementById('results').getAttribute('aria-busy') === 'false'")  # type: ignore[attr-defined]
    assert page.is_visible("#query-chip")  # type: ignore[attr-defined]  # still an image search
    assert page.text_content("#query-chip-text") == "Similar to your image, with “at night”"  # type: ignore[attr-defined]
    # The page shows what the API answers for the image with those words (combined where the gateway can).
    expected = api.post("/api/search/image", params={"q": "at night", "k": 24},
                        files={"file": ("q.jpg", example.read_bytes(), "image/jpeg")}).json()["hits"]
    ids = page.eval_on_selector_all(".card", "cs => cs.map(c => Number(c.dataset.id))")  # type: ignore[attr-defined]
    assert ids == [h["id"] for h in expected]
    page.click("#query-chip-clear")  # type: ignore[attr-defined]
    assert page.input_value("#q") == "" and page.get_attribute("#q", "placeholder") == plain  # type: ignore[attr-defined]
    assert page.locator(".card").count() == 0  # type: ignore[attr-defined]


def test_load_more_follows_the_cursor(page: object, api: httpx.Client, collection: dict[int, bytes],
                                      tmp_path: Path) -> None:
    page.goto(page.base)  # type: ignore[attr-defined]
    search(page, "mountains at dawn")
    if page.locator("#load-more").is_hidden():  # type: ignore[attr-defined]
        pytest.skip("fewer than one page of pictures in the shared collection")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(f"{r.method} {r.url}") if "/api/search" in r.url else None)  # type: ignore[attr-defined]
    first = page.locator(".card").count()  # type: ignore[attr-defined]
    page.click("#load-more")  # type: ignore[attr-defined]
    page.wait_for_function(f"() => document.querySelectorAll('.card').length > {first}")  # type: ignore[attr-defined]
    assert len(asked) == 1 and "/api/search/next?cursor=" in asked[0], asked  # nothing embedded again
    ids = page.eval_on_selector_all(".card", "cs => cs.map(c => Number(c.dataset.id))")  # type: ignore[attr-defined]
    expected = api.get("/api/search", params={"q": "mountains at dawn", "k": len(ids)}).json()["hits"]
    assert ids == [h["id"] for h in expected]

    # An example image is not uploaded again for its next page.
    example = tmp_path / "example.jpg"
    example.write_bytes(next(iter(collection.values())))
    page.set_input_files("#query-file", str(example))  # type: ignore[attr-defined]
    page.wait_for_selector("#load-more:not([hidden]):not([disabled])")  # type: ignore[attr-defined]
    asked.clear()
    first = page.locator(".card").count()  # type: ignore[attr-defined]
    page.click("#load-more")  # type: ignore[attr-defined]
    page.wait_for_function(f"() => document.querySelectorAll('.card').length > {first}")  # type: ignore[attr-defined]
    assert len(asked) == 1 and asked[0].startswith("GET ") and "/api/search/next?" in asked[0], asked
