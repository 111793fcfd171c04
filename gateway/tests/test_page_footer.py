"""The footer in real Chromium: the index's recall estimate against its target, and an estimated count (issue 14).

The shared stack's collection is too small to be measured (under 1,000 pictures), so the measured cases play
GET /api/stats through Playwright: the real reply with the recall fields set as a large collection has them.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from gateway.tests import test_page

browser, collection, page = test_page.browser, test_page.collection, test_page.page
FOOTER_READY = "() => document.getElementById('footer-text').textContent.includes('pgvector')"


def play_stats(pg: object, api: httpx.Client, **fields: object) -> None:
    """Answers the page's stats requests with the real reply, these fields changed."""
    body = {**api.get("/api/stats").json(), **fields}

    def answer(route: Any) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))
    pg.route(lambda url: "/api/stats" in url, answer)  # type: ignore[attr-defined]


def footer(pg: object) -> str:
    pg.goto(pg.base)  # type: ignore[attr-defined]
    pg.wait_for_function(FOOTER_READY)  # type: ignore[attr-defined]
    return str(pg.text_content("#footer-text"))  # type: ignore[attr-defined]


def test_a_recall_at_target_and_an_estimated_count(page: object, api: httpx.Client) -> None:
    play_stats(page, api, count=123456, estimated=True, recall_estimate=0.9914, recall_target=0.98,
               recall_queries=50, recall_measured_at="2026-12-01T20:00:00Z", recall_below_target=False)
    text = footer(page)
    assert "≈ 123,456 pictures" in text and "recall@10 ≈ 0.99 (target 0.98)" in text, text
    recall = page.locator("#footer-recall")  # type: ignore[attr-defined]
    assert recall.get_attribute("class") in (None, "")
    assert "50 sampled pictures" in recall.get_attribute("title")


def test_a_recall_below_target_is_a_warning_in_words(page: object, api: httpx.Client) -> None:
    play_stats(page, api, count=400000, estimated=False, recall_estimate=0.9532, recall_target=0.98,
               recall_queries=50, recall_measured_at="2026-12-01T20:00:00Z", recall_below_target=True)
    text = footer(page)
    assert "400,000 pictures" in text and "≈ 400,000" not in text
    assert "recall@10 ≈ 0.95, below the target 0.98" in text, text
    recall = page.locator("#footer-recall")  # type: ignore[attr-defined]
    assert recall.get_attribute("class") == "warn"
    # Not by color alone: the words say it; and the color differs from the rest of the footer.
    colors = page.evaluate("""() => [getComputedStyle(document.getElementById('footer-recall')).color,
                                     getComputedStyle(document.getElementById('footer-text')).color]""")  # type: ignore[attr-defined]
    assert colors[0] != colors[1]


def test_a_miss_that_rounds_to_the_target_shows_three_digits(page: object, api: httpx.Client) -> None:
    play_stats(page, api, recall_estimate=0.9791, recall_target=0.98, recall_queries=50,
               recall_measured_at="2026-12-01T20:00:00Z", recall_below_target=True)
    assert "recall@10 ≈ 0.979, below the target 0.98" in footer(page)


def test_an_unmeasured_collection_says_nothing_of_recall(page: object, api: httpx.Client) -> None:
    stats = api.get("/api/stats").json()
    assert stats["recall_estimate"] is None and stats["estimated"] is False  # small: exact, not measured
    text = footer(page)
    assert "recall" not in text and "≈" not in text and f"{stats['count']:,} picture" in text, text
