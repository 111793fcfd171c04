"""A heavier OpenAPI fuzz than gateway/tests/test_fuzz.py: more examples per mode, bounded in time; no 5xx."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.stack import Gateway, Stack

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 1500  # per mode; the time budget usually ends the run first
BUDGET_S = 75.0  # per mode
MIN_CALLS = 300  # fewer than this in the budget means the run proved too little


@pytest.fixture(scope="module")
def fuzz_gw(hostile_stack: Stack) -> Gateway:
    """An open gateway of this folder's stack."""
    return hostile_stack.gateway()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_heavy_fuzz_gives_no_server_error(fuzz_gw: Gateway, mode: str) -> None:
    """Up to MAX_EXAMPLES generated requests per mode within BUDGET_S: never a 5xx, always the documented shape."""
    schema = schemathesis.openapi.from_url(f"{fuzz_gw.url}/api/openapi.json")
    checks = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance,
              schemathesis.checks.status_code_conformance, schemathesis.checks.content_type_conformance]
    started, calls = time.monotonic(), 0

    @given(case=schema.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: object) -> None:
        nonlocal calls
        if time.monotonic() - started > BUDGET_S:
            return  # out of time: let hypothesis finish generating without calling
        calls += 1
        case.call_and_validate(checks=checks, timeout=30)  # type: ignore[attr-defined]

    run()
    print(f"\n{mode}: {calls} requests in {time.monotonic() - started:.0f} s")
    assert calls >= MIN_CALLS
