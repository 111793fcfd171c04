"""Property-based fuzzing of the served OpenAPI spec (schemathesis): no input gives a 5xx."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.stack import Gateway

pytestmark = pytest.mark.db  # the gateway's stack; marked here too so that -m "not db" never imports hypothesis
schemathesis = pytest.importorskip("schemathesis")


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_gives_a_server_error(gw: Gateway, mode: str) -> None:
    """Valid (positive) and invalid (negative) requests for every operation of the spec the gateway serves."""
    schema = schemathesis.openapi.from_url(f"{gw.url}/api/openapi.json")
    checks = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance,
              schemathesis.checks.status_code_conformance, schemathesis.checks.content_type_conformance]

    @given(case=schema.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: object) -> None:
        case.call_and_validate(checks=checks, timeout=30)  # type: ignore[attr-defined]

    run()
