"""Fixtures of the gateway's tests: one shared stack and a private one (tests.support.stack), and the app over
fake backends for route tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from embedder_service.model import ClipModel
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.tests.fakes import FakeBackends
from index_service.pg import EmbeddedPostgres
from tests.support.stack import Gateway, Stack, build_stack


@pytest.fixture(scope="session")
def stack(clip_model: ClipModel, embedded_pg: EmbeddedPostgres,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack shared by the API and browser tests (they use distinct images, so they do not collide)."""
    s, close = build_stack(clip_model, embedded_pg, tmp_path_factory.mktemp("gw-index"))
    yield s
    close()


@pytest.fixture
def private_stack(clip_model: ClipModel, embedded_pg: EmbeddedPostgres, tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for tests that stop a backend."""
    s, close = build_stack(clip_model, embedded_pg, tmp_path / "index")
    yield s
    close()


@pytest.fixture(scope="session")
def gw(stack: Stack) -> Gateway:
    """The shared open gateway (no token)."""
    return stack.gateway()


@pytest.fixture(scope="session")
def api(gw: Gateway) -> httpx.Client:
    """An HTTP client of the shared gateway."""
    return gw.client


@pytest.fixture
def fake() -> FakeBackends:
    """Fake backends for route tests (a test module may define its own, e.g. with other settings)."""
    return FakeBackends(GatewayConfig())


@pytest.fixture
def client(fake: FakeBackends) -> Iterator[TestClient]:
    """The app over `fake`, started and stopped around the test."""
    with TestClient(create_app(fake.config, connect=lambda _: fake)) as c:
        yield c
