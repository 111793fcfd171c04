"""The page in real headless Chromium (Debian's), driven by Playwright; screenshots go to .cache/screenshots/."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedder_service.tests import images
from gateway.tests.test_api import upload
from protos.semsearch.v1 import index_pb2
from tests.support.stack import Gateway, Stack

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / ".cache" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LABELS = ["beach", "forest", "city", "mountain"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                              "(apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def collection(api: httpx.Client) -> dict[int, bytes]:
    """Thirty labelled pictures in the shared stack; returns id -> bytes."""
    out: dict[int, bytes] = {}
    for i in range(30):
        data = images.jpeg(480, 360, seed=900 + i)
        r = upload(api, data, label=LABELS[i % len(LABELS)], names=[f"photo-{i}.jpg"])
        out[r.json()["results"][0]["id"]] = data
    return out


@pytest.fixture
def page(browser: object, gw: Gateway, collection: dict[int, bytes]) -> Iterator[object]:
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


VISIBLE_IMAGES_LOADED = """() => [...document.querySelectorAll('img')]
    .filter(i => i.src && i.getBoundingClientRect().top < innerHeight && i.getBoundingClientRect().bottom > 0)
    .every(i => i.complete)"""


def shot(pg: object, name: str) -> None:
    """Save a screenshot once the pictures in view have loaded."""
    pg.wait_for_function(VISIBLE_IMAGES_LOADED)  # type: ignore[attr-defined]
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"))  # type: ignore[attr-defined]


def search(pg: object, text: str) -> None:
    """Type like a person; the page searches by itself after the debounce."""
    pg.fill("#q", "")  # type: ignore[attr-defined]
    pg.type("#q", text, delay=15)  # type: ignore[attr-defined]
    settled = """text => new URLSearchParams(location.search).get('q') === text
        && document.getElementById('results').getAttribute('aria-busy') === 'false'
        && document.querySelector('.card') !== null"""
    pg.wait_for_function(settled, arg=text)  # type: ignore[attr-defined]


def test_empty_state_and_footer(page: object) -> None:
    page.goto(page.base)  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('footer-text').textContent.includes('pgvector')")  # type: ignore[attr-defined]
    footer = page.text_content("#footer-text")  # type: ignore[attr-defined]
    assert "random-tiny" in footer and "fp32" in footer and "CPU" in footer and "no meaning" in footer
    assert page.is_visible("#demo-banner")  # type: ignore[attr-defined]
    assert "random weights" in page.text_content("#demo-banner")  # type: ignore[attr-defined]
    assert "Search your pictures" in page.text_content("#empty")  # type: ignore[attr-defined]
    assert page.get_attribute("#q", "placeholder")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.querySelectorAll('#label-filter option').length > 1")  # type: ignore[attr-defined]
    options = page.eval_on_selector_all("#label-filter option", "os => os.map(o => o.value)")  # type: ignore[attr-defined]
    assert set(LABELS) <= set(options)
    shot(page, "01-empty")


def test_search_as_you_type_shows_results_and_loads_more(page: object) -> None:
    page.goto(page.base)  # type: ignore[attr-defined]
    search(page, "a quiet beach at sunset")
    cards = page.locator(".card")  # type: ignore[attr-defined]
    assert cards.count() == 24 or cards.count() >= 16
    assert "results" in page.text_content("#status-text")  # type: ignore[attr-defined]
    alt = cards.first.locator("img").get_attribute("alt")
    assert "score" in alt
    assert "q=a+quiet+beach" in page.url  # type: ignore[attr-defined]
    shot(page, "02-results")
    page.select_option("#label-filter", "forest")  # type: ignore[attr-defined]
    only_forest = "() => [...document.querySelectorAll('.card .label')].every(e => e.textContent === 'forest')"
    page.wait_for_function(only_forest)  # type: ignore[attr-defined]
    assert page.locator(".card").count() == 8  # type: ignore[attr-defined]


def test_load_more_appends(page: object, api: httpx.Client) -> None:
    page.goto(page.base)  # type: ignore[attr-defined]
    search(page, "mountains")
    if page.locator("#load-more").is_hidden():  # type: ignore[attr-defined]
        pytest.skip("fewer than one page of pictures in the shared collection")
    first = page.locator(".card").count()  # type: ignore[attr-defined]
    page.click("#load-more")  # type: ignore[attr-defined]
    page.wait_for_function(f"() => document.querySelectorAll('.card').length > {first}")  # type: ignore[attr-defined]
    ids = page.eval_on_selector_all(".card", "cs => cs.map(c => Number(c.dataset.id))")  # type: ignore[attr-defined]
    expected = api.get("/api/search", params={"q": "mountains", "k": len(ids)}).json()["hits"]
    assert ids == [h["id"] for h in expected]


def test_upload_then_find(page: object, api: httpx.Client, tmp_path: Path) -> None:
    picture, notes = tmp_path / "harbour.jpg", tmp_path / "notes.jpg"
    picture.write_bytes(images.jpeg(500, 400, seed=1234))
    notes.write_bytes(b"these are not pixels")
    page.goto(page.base)  # type: ignore[attr-defined]
    page.click("#open-upload")  # type: ignore[attr-defined]
    page.fill("#upload-label", "harbour")  # type: ignore[attr-defined]
    page.set_input_files("#upload-files", [str(picture), str(notes)])  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('upload-summary').textContent.startsWith('Done')")  # type: ignore[attr-defined]
    assert "1 added" in page.text_content("#upload-summary")  # type: ignore[attr-defined]
    assert page.locator(".outcome.created").count() == 1  # type: ignore[attr-defined]
    assert "415" in page.text_content(".outcome.error")  # type: ignore[attr-defined]
    assert "not an image" in page.text_content(".upload-list .message")  # type: ignore[attr-defined]
    shot(page, "03-upload")
    page.click("#uploader-close")  # type: ignore[attr-defined]
    new_id = upload(api, picture.read_bytes()).json()["results"][0]["id"]
    page.set_input_files("#query-file", str(picture))  # type: ignore[attr-defined]
    page.wait_for_selector(f".card[data-id='{new_id}']")  # type: ignore[attr-defined]
    assert page.get_attribute(".card >> nth=0", "data-id") == str(new_id)  # type: ignore[attr-defined]
    assert page.text_content(".card >> nth=0 >> .label") == "harbour"  # type: ignore[attr-defined]


def test_drop_an_image_to_search(page: object, collection: dict[int, bytes]) -> None:
    target_id, data = next(iter(collection.items()))
    page.goto(page.base)  # type: ignore[attr-defined]
    transfer = page.evaluate_handle(  # type: ignore[attr-defined]
        """b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], 'example.jpg', { type: 'image/jpeg' }));
                    return dt; }""", base64.b64encode(data).decode())
    page.dispatch_event("#search-area", "dragenter", {"dataTransfer": transfer})  # type: ignore[attr-defined]
    assert "dragging" in page.get_attribute("#search-area", "class")  # type: ignore[attr-defined]
    shot(page, "04-drag-over")
    page.dispatch_event("#search-area", "drop", {"dataTransfer": transfer})  # type: ignore[attr-defined]
    page.wait_for_selector(f".card[data-id='{target_id}']")  # type: ignore[attr-defined]
    assert page.get_attribute(".card >> nth=0", "data-id") == str(target_id)  # type: ignore[attr-defined]
    assert page.is_visible("#query-chip")  # type: ignore[attr-defined]
    assert page.text_content(".card >> nth=0 >> .score") == "1.000"  # type: ignore[attr-defined]
    shot(page, "05-image-search")
    page.click("#query-chip-clear")  # type: ignore[attr-defined]
    assert page.locator(".card").count() == 0 and page.is_hidden("#query-chip")  # type: ignore[attr-defined]
    # Pasting the picture searches by it too.
    page.evaluate("dt => document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt }))", transfer)  # type: ignore[attr-defined]
    page.wait_for_selector(f".card[data-id='{target_id}']")  # type: ignore[attr-defined]
    assert page.get_attribute(".card >> nth=0", "data-id") == str(target_id)  # type: ignore[attr-defined]


def test_viewer_and_more_like_this(page: object) -> None:
    page.goto(page.base)  # type: ignore[attr-defined]
    search(page, "pine trees")
    first_id = page.get_attribute(".card >> nth=0", "data-id")  # type: ignore[attr-defined]
    page.click(".card >> nth=0")  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer[open]")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('viewer-meta').textContent.includes('File')")  # type: ignore[attr-defined]
    meta = page.text_content("#viewer-meta")  # type: ignore[attr-defined]
    assert "Score" in meta and "480 × 360" in meta and "photo-" in meta
    assert page.evaluate("document.activeElement.id") == "viewer-similar"  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('viewer-img').complete")  # type: ignore[attr-defined]
    shot(page, "06-viewer")
    page.click("#viewer-similar")  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer", state="hidden")  # type: ignore[attr-defined]
    page.wait_for_function(f"() => document.getElementById('query-chip-text').textContent.includes('#{first_id}')")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('results').getAttribute('aria-busy') === 'false'")  # type: ignore[attr-defined]
    ids = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.id)")  # type: ignore[attr-defined]
    assert ids and first_id not in ids
    assert f"similar={first_id}" in page.url  # type: ignore[attr-defined]


def test_keyboard_navigation(page: object) -> None:
    page.goto(page.base)  # type: ignore[attr-defined]
    search(page, "city lights")
    page.focus(".card >> nth=0")  # type: ignore[attr-defined]
    page.keyboard.press("ArrowRight")  # type: ignore[attr-defined]
    assert page.evaluate("document.activeElement.dataset.index") == "1"  # type: ignore[attr-defined]
    page.keyboard.press("ArrowDown")  # type: ignore[attr-defined]
    columns = page.evaluate("getComputedStyle(results).gridTemplateColumns.split(' ').length")  # type: ignore[attr-defined]
    assert page.evaluate("document.activeElement.dataset.index") == str(1 + columns)  # type: ignore[attr-defined]
    page.keyboard.press("Home")  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer[open]")  # type: ignore[attr-defined]
    shown = "() => Number(document.querySelector('#viewer-meta dt:nth-of-type(5) + dd').textContent)"
    assert page.evaluate(shown) == int(page.get_attribute(".card >> nth=0", "data-id"))  # type: ignore[attr-defined]
    page.keyboard.press("ArrowRight")  # type: ignore[attr-defined]
    assert page.evaluate(shown) == int(page.get_attribute(".card >> nth=1", "data-id"))  # type: ignore[attr-defined]
    assert page.is_disabled("#viewer-prev") is False  # type: ignore[attr-defined]
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    page.wait_for_selector("#viewer", state="hidden")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.activeElement.dataset.index === '1'", timeout=2000)  # type: ignore[attr-defined]


def test_phone_layout(browser: object, gw: Gateway, collection: dict[int, bytes]) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,  # type: ignore[attr-defined]
                                  is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(gw.url)
    search(pg, "a red bicycle")
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    shot(pg, "07-phone-results")
    pg.click(".card >> nth=0")
    pg.wait_for_selector("#viewer[open]")
    pg.wait_for_function("() => document.getElementById('viewer-img').complete")
    shot(pg, "08-phone-viewer")
    pg.keyboard.press("Escape")
    pg.emulate_media(color_scheme="dark")
    assert pg.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 19, 24)"
    shot(pg, "10-phone-dark")
    context.close()


def test_backend_down_shows_a_message_and_recovers(browser: object, private_stack: Stack) -> None:
    gw = private_stack.gateway(search_deadline_s=3.0)
    upload(gw.client, images.jpeg(seed=4321), label="lighthouse")
    private_stack.embedder.stop()
    context = browser.new_context(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.goto(gw.url)
    pg.wait_for_function("() => document.getElementById('footer-text').textContent.includes('unavailable')")
    pg.type("#q", "lighthouse", delay=10)
    pg.wait_for_selector("#alert:not([hidden])")
    assert "unavailable" in pg.text_content("#alert-text")
    assert pg.is_visible("#alert-retry")
    shot(pg, "09-backend-down")
    private_stack.embedder.restart()
    pg.wait_for_function("() => document.getElementById('footer-text').textContent.includes('pgvector')",
                         timeout=10_000)
    pg.eval_on_selector("#alert-retry", "b => b.click()")  # not pg.click: the page may have retried by itself
    pg.wait_for_selector(".card", timeout=5_000)
    assert pg.is_hidden("#alert")
    context.close()


def test_pick_a_collection(page: object, api: httpx.Client, stack: Stack) -> None:
    stats = api.get("/api/stats").json()
    stack.index.stub.CreateCollection(index_pb2.CreateCollectionRequest(
        name="page_second", model_id=stats["model_id"], dim=stats["dim"]), timeout=10)
    for seed in (1401, 1402):
        r = api.post("/api/images", files=[("files", (f"s{seed}.jpg", images.jpeg(seed=seed), "image/jpeg"))],
                     data={"label": "second-only", "collection": "page_second"})
        assert r.status_code == 201, r.text
    page.goto(page.base)  # type: ignore[attr-defined]
    page.wait_for_selector("#collection-select", state="visible")  # type: ignore[attr-defined]
    assert f"{stats['dim']}-d" in page.text_content("#footer-text")  # type: ignore[attr-defined]
    page.select_option("#collection-select", "page_second")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('footer-text').textContent.includes('in page_second')")  # type: ignore[attr-defined]
    search(page, "a small picture")
    labels = page.eval_on_selector_all(".card .label", "ls => ls.map(l => l.textContent)")  # type: ignore[attr-defined]
    assert labels == ["second-only", "second-only"]
    page.wait_for_function(VISIBLE_IMAGES_LOADED)  # type: ignore[attr-defined]
    assert page.locator(".card img.broken").count() == 0  # type: ignore[attr-defined]  # thumbnails of this collection
    assert "collection=page_second" in page.url  # type: ignore[attr-defined]
    page.wait_for_function("() => [...document.querySelectorAll('#label-filter option')].map(o => o.value)"  # type: ignore[attr-defined]
                           ".join() === ',second-only'")
    shot(page, "11-collection")
    page.reload()  # type: ignore[attr-defined]  # the choice lives in the URL
    page.wait_for_function("() => document.querySelectorAll('.card').length === 2")  # type: ignore[attr-defined]
    assert page.input_value("#collection-select") == "page_second"  # type: ignore[attr-defined]


def test_a_collection_of_another_model_says_so(page: object, api: httpx.Client, stack: Stack) -> None:
    stats = api.get("/api/stats").json()
    stack.index.stub.CreateCollection(index_pb2.CreateCollectionRequest(
        name="page_other", model_id="another-model@2", dim=stats["dim"]), timeout=10)
    page.goto(f"{page.base}/?collection=page_other&q=a+dog")  # type: ignore[attr-defined]
    page.wait_for_selector("#alert", state="visible")  # type: ignore[attr-defined]
    alert = page.text_content("#alert-text")  # type: ignore[attr-defined]
    assert "was made with model another-model@2" in alert and f"the embedder serves {stats['model_id']}" in alert
    page.wait_for_selector("#collection-select", state="visible")  # type: ignore[attr-defined]
    assert page.input_value("#collection-select") == "page_other"  # type: ignore[attr-defined]
