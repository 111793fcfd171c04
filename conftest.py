"""Fixtures shared by every test folder: model bundles built by the project's own tool."""

from __future__ import annotations

import os
from pathlib import Path

# Tests fork helpers (pg_ctl run as another user) while gRPC threads are busy; gRPC's fork handlers
# then skip themselves and the child can crash before exec. Nothing here needs gRPC across a fork.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

REPO = Path(__file__).resolve().parent
SHARED = REPO.parent / "shared"
CACHE = REPO / ".cache" / "test-bundles"


@pytest.fixture(scope="session")
def tiny_bundle_dir() -> Path:
    """A tiny random-weight CLIP bundle (fp32), built once and cached under .cache/."""
    pytest.importorskip("torch", reason="building a bundle needs the torch extra")
    from embedder_service import export

    return export.cached_random_bundle(CACHE, preset="tiny")
