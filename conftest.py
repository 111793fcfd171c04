"""Fixtures shared by every test folder: model bundles built by the project's own tool."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Tests fork helpers (pg_ctl run as another user) while gRPC threads are busy; gRPC's fork handlers
# then skip themselves and the child can crash before exec. Nothing here needs gRPC across a fork.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

REPO = Path(__file__).resolve().parent
SHARED = REPO.parent / "shared"
CACHE = REPO / ".cache" / "test-bundles"
_OWN_BASETEMP = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Give each run its own temp root outside /tmp/pytest-of-<user>.

    pytest resets that folder to mode 0700 whenever a run starts, which locks the unprivileged Postgres
    user out of clusters that another, concurrent run keeps under it.
    """
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="semsearch-pytest-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's own temp root."""
    if (own := config.stash.get(_OWN_BASETEMP, None)) is not None:
        shutil.rmtree(own, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_bundle_dir() -> Path:
    """A tiny random-weight CLIP bundle (fp32), built once and cached under .cache/."""
    pytest.importorskip("torch", reason="building a bundle needs the torch extra")
    from embedder_service.models import export

    return export.cached_random_bundle(CACHE, preset="tiny")
