"""In-process stack for the hostile-input tests: the real embedder (tiny model), index (embedded Postgres), gateway.

The stack comes from tests.support; this folder gets a stack (and a database) of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from embedder_service.model import ClipModel
from index_service.pg import EmbeddedPostgres
from tests.support.stack import Stack, build_stack


@pytest.fixture(scope="session")
def hostile_stack(clip_model: ClipModel, embedded_pg: EmbeddedPostgres,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Embedder, index (own database and media store) and a factory of gateways, all in this process."""
    stack, close = build_stack(clip_model, embedded_pg, tmp_path_factory.mktemp("hostile-index"))
    yield stack
    close()
