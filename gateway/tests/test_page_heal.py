"""The page heals itself: a search that fails while the embedder is down repaints, with no click, once it is back."""

from __future__ import annotations

import time

from embedder_service.tests import images
from gateway.tests import test_page
from gateway.tests.test_api import upload
from gateway.tests.test_page import search, shot
from tests.support.stack import Stack

browser = test_page.browser  # the fixture, shared with the page tests


def test_a_failed_search_retries_by_itself(browser: object, private_stack: Stack) -> None:
    gw = private_stack.gateway(search_deadline_s=3.0)
    pictures = [images.jpeg(64, 48, seed=7000 + i) for i in range(26)]  # more than a page: "Load more" shows
    assert upload(gw.client, *pictures, label="street").status_code == 201
    context = browser.new_context(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.goto(gw.url)
    search(pg, "a blue boat")
    assert pg.is_visible("#load-more")

    private_stack.embedder.stop()
    search_failures: list[int] = []
    pg.on("response", lambda r: search_failures.append(r.status) if "/api/search?" in r.url else None)
    pg.fill("#q", "")
    pg.type("#q", "a red car", delay=10)
    pg.wait_for_selector("#alert:not([hidden])")
    assert "unavailable" in pg.text_content("#alert-text")
    assert pg.is_visible("#alert-retry")  # the manual way stays
    assert pg.is_hidden("#load-more"), "a stale Load more button while the search fails"
    pg.wait_for_function("() => /Retrying in \\d+ s/.test(document.getElementById('alert-countdown').textContent)")
    shot(pg, "20-retrying")
    # A second failed answer came without any click: the page retried by itself.
    with pg.expect_response(lambda r: "/api/search?" in r.url and "q=a+red+car" in r.url, timeout=10_000) as retry:
        pass
    assert retry.value.status == 503
    assert all(status == 503 for status in search_failures) and len(search_failures) >= 2

    private_stack.embedder.restart()
    started = time.monotonic()
    pg.wait_for_selector(".card", timeout=20_000)  # backoff steps 1, 2, 4, 8 s: the next retry comes within 8 s
    assert time.monotonic() - started < 20
    assert pg.is_hidden("#alert") and pg.is_hidden("#alert-countdown")
    assert pg.is_visible("#load-more")
    assert "q=a+red+car" in pg.url
    context.close()
