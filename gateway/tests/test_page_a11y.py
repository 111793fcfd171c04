"""Accessibility of the page's main views in both color schemes, checked by axe-core in real Chromium.

axe-core comes from npm into .cache/axe (tests.support.axe; `make test` installs it). Each view must have no
violation of impact "serious" or "critical" (color contrast of 4.5:1 among them) in the light and dark themes,
at desktop size and at a phone's (390 x 844, touch), where the layout wraps and stacks differently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.tests import test_page
from gateway.tests.test_page import search
from gateway.tests.test_page_duplicates import plant, serve_duplicates
from tests.support import axe
from tests.support.stack import Gateway, Stack

browser, collection = test_page.browser, test_page.collection
SCHEMES = ["light", "dark"]
BAD = {"serious", "critical"}


@pytest.fixture(scope="module")
def axe_script() -> str:
    """The path of axe.min.js, installed from npm on first use."""
    path = axe.install()
    if path is None:
        pytest.skip("axe-core needs npm (install Node.js)")
    return str(path)


@pytest.fixture(params=SCHEMES)
def themed(request: pytest.FixtureRequest, browser: object, gw: Gateway,
           collection: dict[int, bytes]) -> Iterator[object]:
    """A desktop page in one color scheme; the CSP is bypassed only so that axe's script can be injected."""
    context = browser.new_context(viewport={"width": 1280, "height": 860},  # type: ignore[attr-defined]
                                  color_scheme=request.param, bypass_csp=True, reduced_motion="reduce")
    pg = context.new_page()
    pg.base = gw.url  # type: ignore[attr-defined]
    pg.scheme = request.param  # type: ignore[attr-defined]
    yield pg
    context.close()


def serious_violations(pg: object, axe_script: str) -> list[str]:
    """axe's serious and critical violations on the page as it is now, one line each."""
    if not pg.evaluate("typeof axe !== 'undefined'"):  # type: ignore[attr-defined]
        pg.add_script_tag(path=axe_script)  # type: ignore[attr-defined]
    result = pg.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")  # type: ignore[attr-defined]
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            f"{json.dumps([n['target'] for n in v['nodes']][:4])} {v['nodes'][0].get('failureSummary', '')}"
            for v in result["violations"] if v["impact"] in BAD]


def results(pg: object) -> None:
    """Search results, with the query help open."""
    search(pg, "a quiet beach")
    pg.click("#query-help summary")  # type: ignore[attr-defined]


def viewer(pg: object) -> None:
    """The viewer open on the first result."""
    search(pg, "a quiet beach")
    pg.click(".card >> nth=0")  # type: ignore[attr-defined]
    pg.wait_for_selector("#viewer[open]")  # type: ignore[attr-defined]
    pg.wait_for_function("() => document.getElementById('viewer-meta').textContent.includes('File')")  # type: ignore[attr-defined]


def uploader(pg: object) -> None:
    """The upload dialog open."""
    pg.click("#open-upload")  # type: ignore[attr-defined]
    pg.wait_for_selector("#uploader[open]")  # type: ignore[attr-defined]


def failing(pg: object) -> None:
    """A search that fails (the gateway answers 503) and retries by itself: the alert and its countdown."""
    pg.route("**/api/search?*", lambda route: route.fulfill(  # type: ignore[attr-defined]
        status=503, content_type="application/json", body='{"error": "unavailable", "message": "embedder down"}'))
    pg.fill("#q", "a red car")  # type: ignore[attr-defined]
    pg.wait_for_function("() => /Retrying in/.test(document.getElementById('alert-countdown').textContent)")  # type: ignore[attr-defined]


def filters(pg: object) -> None:
    """The filter panel open over results dimmed below a relevance cutoff."""
    search(pg, "a quiet beach")
    pg.click("#open-filters")  # type: ignore[attr-defined]
    pg.wait_for_selector("#filter-panel:not([hidden])")  # type: ignore[attr-defined]
    pg.select_option("#cutoff-gap", "0.02")  # type: ignore[attr-defined]
    pg.wait_for_function("() => location.search.includes('cutoff_gap=0.02')")  # type: ignore[attr-defined]


def tagging(pg: object) -> None:
    """Selecting results to tag them: the tag editor with one card chosen."""
    search(pg, "a quiet beach")
    pg.click("#select-mode")  # type: ignore[attr-defined]
    pg.wait_for_selector("#tag-editor:not([hidden])")  # type: ignore[attr-defined]
    pg.click(".card >> nth=0")  # type: ignore[attr-defined]
    pg.wait_for_function("() => document.getElementById('selected-count').textContent.startsWith('1')")  # type: ignore[attr-defined]


def recall_warning(pg: object) -> None:
    """Results with the footer warning that the index's recall estimate is below its target (issue 14)."""
    def answer(route: Any) -> None:
        real = route.fetch()
        body = {**real.json(), "count": 400000, "estimated": True, "recall_estimate": 0.953, "recall_target": 0.98,
                "recall_queries": 50, "recall_measured_at": "2026-12-01T20:00:00Z", "recall_below_target": True}
        route.fulfill(response=real, json=body)
    pg.route(lambda url: "/api/stats" in url, answer)  # type: ignore[attr-defined]
    pg.reload()  # type: ignore[attr-defined]
    pg.wait_for_selector("#footer-recall.warn")  # type: ignore[attr-defined]
    search(pg, "a quiet beach")


VIEWS: dict[str, Callable[[object], None]] = {"results": results, "viewer": viewer, "uploader": uploader,
                                              "failing": failing, "filters": filters, "tagging": tagging,
                                              "recall-warning": recall_warning}


@pytest.mark.parametrize("view", VIEWS)
def test_no_serious_accessibility_violations(themed: object, axe_script: str, view: str) -> None:
    themed.goto(themed.base)  # type: ignore[attr-defined]
    themed.wait_for_function("() => document.getElementById('footer-text').textContent.includes('pgvector')")  # type: ignore[attr-defined]
    VIEWS[view](themed)
    problems = serious_violations(themed, axe_script)
    assert not problems, f"{view} in the {themed.scheme} theme:\n" + "\n".join(problems)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def planted(api: httpx.Client, stack: Stack) -> dict[str, list[int]]:
    """Near-copies in a collection of their own, for the duplicates view."""
    return plant(api, stack, "page_dups_a11y")


def test_duplicates_view_has_no_serious_violations(themed: object, axe_script: str, api: httpx.Client,
                                                   planted: dict[str, list[int]]) -> None:
    serve_duplicates(themed, api, "page_dups_a11y", planted)
    themed.goto(f"{themed.base}/?collection=page_dups_a11y")  # type: ignore[attr-defined]
    themed.click("#open-duplicates")  # type: ignore[attr-defined]
    themed.wait_for_function("() => document.getElementById('dups-progress-text').textContent"  # type: ignore[attr-defined]
                             ".startsWith('Scanned all')")
    problems = serious_violations(themed, axe_script)
    assert not problems, f"duplicates in the {themed.scheme} theme:\n" + "\n".join(problems)  # type: ignore[attr-defined]


@pytest.fixture(params=SCHEMES)
def phone(request: pytest.FixtureRequest, browser: object, gw: Gateway,
          collection: dict[int, bytes]) -> Iterator[object]:
    """A 390 px wide touch page in one color scheme (CSP bypassed for axe, as on the desktop)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,  # type: ignore[attr-defined]
                                  is_mobile=True, has_touch=True, color_scheme=request.param, bypass_csp=True,
                                  reduced_motion="reduce")
    pg = context.new_page()
    pg.base = gw.url  # type: ignore[attr-defined]
    pg.scheme = request.param  # type: ignore[attr-defined]
    yield pg
    context.close()


@pytest.mark.parametrize("view", VIEWS)
def test_no_serious_violations_at_phone_width(phone: object, axe_script: str, view: str) -> None:
    phone.goto(phone.base)  # type: ignore[attr-defined]
    phone.wait_for_function("() => document.getElementById('footer-text').textContent.includes('pgvector')")  # type: ignore[attr-defined]
    VIEWS[view](phone)
    problems = serious_violations(phone, axe_script)
    assert not problems, f"{view} on a phone in the {phone.scheme} theme:\n" + "\n".join(problems)  # type: ignore[attr-defined]
    # Nothing may need sideways scrolling on a phone (WCAG 1.4.10 reflow), which axe does not check.
    wide = phone.evaluate("""() => [...document.querySelectorAll('body *')].filter(e => e.getClientRects().length
        && e.getBoundingClientRect().right > innerWidth + 1 && getComputedStyle(e).position !== 'fixed')
        .map(e => e.id || e.className || e.tagName).slice(0, 5)""")  # type: ignore[attr-defined]
    assert phone.evaluate("document.documentElement.scrollWidth <= innerWidth"), (view, wide)  # type: ignore[attr-defined]


def test_duplicates_view_has_no_serious_violations_at_phone_width(phone: object, axe_script: str,
                                                                  api: httpx.Client,
                                                                  planted: dict[str, list[int]]) -> None:
    serve_duplicates(phone, api, "page_dups_a11y", planted)
    phone.goto(f"{phone.base}/?collection=page_dups_a11y#duplicates")  # type: ignore[attr-defined]
    phone.wait_for_function("() => document.getElementById('dups-progress-text').textContent"  # type: ignore[attr-defined]
                            ".startsWith('Scanned all')")
    problems = serious_violations(phone, axe_script)
    assert not problems, f"duplicates on a phone in the {phone.scheme} theme:\n" + "\n".join(problems)  # type: ignore[attr-defined]
