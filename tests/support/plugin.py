"""The pytest plugin of the test suite: tier markers, the run's temp root, and the fixtures every folder shares.

Tiers: `db` (embedded Postgres), `torch` (a bundle built with torch), `browser` (Chromium), `system` (tests/system),
`slow`. Tests get them from the fixtures they use (below) or from explicit marks; `make test-fast` runs the rest.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

# Tests fork helpers (pg_ctl run as another user) while gRPC threads are busy; gRPC's fork handlers
# then skip themselves and the child can crash before exec. Nothing here needs gRPC across a fork.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

if TYPE_CHECKING:
    from embedder_service.model import ClipModel
    from index_service.pg import EmbeddedPostgres

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "test-bundles"
SYSTEM = REPO / "tests" / "system"
# A test that uses one of these fixtures (directly or through another fixture) is in that tier.
TIER_FIXTURES = {
    "db": {"embedded_pg", "pg"},
    "torch": {"tiny_bundle_dir"},
    "browser": {"browser", "page"},
}
TIERS = ("db", "browser", "torch", "system", "slow", "deploy")
_MODULE_MARKS = re.compile(r"^pytestmark\s*=.*$", re.MULTILINE)
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the tiers its fixtures and its folder put it in."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for tier, fixtures in TIER_FIXTURES.items():
            if used & fixtures:
                item.add_marker(tier)
        if SYSTEM in Path(str(item.path)).parents:
            item.add_marker("system")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not even import a test module whose tier the -m expression leaves out (torch takes a minute to import).

    The module's tiers are its folder's (tests/system) and its `pytestmark` line's; it is skipped only when no
    test in it could be selected, whatever other tiers its tests add.
    """
    expr = config.option.markexpr
    if not expr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    tiers = set(re.findall(r"pytest\.mark\.(\w+)", " ".join(_MODULE_MARKS.findall(collection_path.read_text()))))
    if SYSTEM in collection_path.parents:
        tiers.add("system")
    if not tiers:
        return None
    from _pytest.mark.expression import Expression

    compiled = Expression.compile(expr)
    others = [t for t in TIERS if t not in tiers]
    for n in range(len(others) + 1):
        for extra in itertools.combinations(others, n):
            marks = tiers | set(extra)
            if compiled.evaluate(lambda name, marks=marks, **_: name in marks):
                return None
    return True


@pytest.fixture(scope="session")
def tiny_bundle_dir() -> Path:
    """A tiny random-weight CLIP bundle (fp32), built once and cached under .cache/."""
    pytest.importorskip("torch", reason="building a bundle needs the torch extra")
    from embedder_service.models import export

    return export.cached_random_bundle(CACHE, preset="tiny")


@pytest.fixture(scope="session")
def clip_model(tiny_bundle_dir: Path) -> ClipModel:
    """The tiny random-weight model, loaded once."""
    from embedder_service.model import ClipModel
    from embedder_service.models import bundle

    return ClipModel(bundle.load(tiny_bundle_dir), "cpu")


@pytest.fixture(scope="session")
def embedded_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A session-wide embedded Postgres on 127.0.0.1 (a port of its choosing), stopped at the end."""
    from index_service.pg import EmbeddedPostgres
    from tests.support.pg import FAST_SETTINGS

    pg = EmbeddedPostgres(tmp_path_factory.mktemp("index-pg"), settings=FAST_SETTINGS)
    pg.start()
    yield pg
    pg.stop(mode="immediate")


@pytest.fixture
def pg_dsn(embedded_pg: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database of the session server, dropped after the test."""
    from tests.support.pg import create_database, drop_database

    dsn = create_database(embedded_pg)
    yield dsn
    drop_database(embedded_pg, dsn)
