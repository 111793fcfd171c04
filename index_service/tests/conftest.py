"""Fixtures of the index tests: an in-process server on a fresh database (shared helpers: tests.support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.index import Running, make_config, start_server


@pytest.fixture
def index(tmp_path: Path, pg_dsn: str) -> Iterator[Running]:
    """A ready index server on its own database and data dir."""
    running = start_server(make_config(tmp_path / "data", pg_dsn))
    yield running
    running.stop()
