"""The contract's tooling: relative imports of the generated code, enum words, and buf guarding old clients."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from protos import contract, generate
from protos.semsearch.v1 import common_pb2, embedder_pb2, index_pb2
from semsearch_common.enums import enum_value, enum_word

ROOT = Path(__file__).resolve().parents[1]


def test_generated_imports_become_relative() -> None:
    line = "from semsearch.v1 import common_pb2 as _common_pb2\n"
    assert generate.relative(line, "semsearch.v1") == "from . import common_pb2 as _common_pb2\n"
    assert generate.relative(line, "semsearch.v2") == "from ..v1 import common_pb2 as _common_pb2\n"
    untouched = "from google.rpc import status_pb2 as google_dot_rpc_dot_status__pb2\n"
    assert generate.relative(untouched, "semsearch.v1") == untouched


def test_files_are_named_from_the_proto_root() -> None:
    """Reflection and every other language see semsearch/v1/..., not the repository's protos/ prefix."""
    assert index_pb2.DESCRIPTOR.name == "semsearch/v1/index.proto"
    assert "google/rpc/status.proto" in [d.name for d in embedder_pb2.DESCRIPTOR.dependencies]
    assert common_pb2.ErrorReason.Name(common_pb2.MODEL_MISMATCH) == "MODEL_MISMATCH"


@pytest.mark.parametrize("enum", [index_pb2.Backend, index_pb2.IndexState, index_pb2.ImageVariant,
                                  embedder_pb2.Precision])
def test_enum_words_round_trip(enum) -> None:
    for number in enum.values():
        assert enum_value(enum, enum_word(enum, number)) == number
    assert enum_word(enum, 999) == "unknown"


def test_old_wire_values_keep_their_meaning() -> None:
    """0 was ORIGINAL and 1 THUMBNAIL before UNSPECIFIED took 0; the server reads 0 as the original."""
    assert (index_pb2.IMAGE_VARIANT_UNSPECIFIED, index_pb2.IMAGE_VARIANT_THUMBNAIL) == (0, 1)
    assert enum_word(index_pb2.Backend, index_pb2.BACKEND_PGVECTOR) == "pgvector"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                   check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A scratch git repository holding a committed copy of the contract."""
    for path in (ROOT / "protos").rglob("*"):
        if path.suffix in (".proto", ".yaml") or path.name == "BREAKING.md":
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "contract")
    return tmp_path


def _edit(checkout: Path, old: str, new: str) -> None:
    path = checkout / "protos/semsearch/v1/index.proto"
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


@pytest.mark.slow  # buf (from npm) on a copy of the repository
@pytest.mark.skipif(shutil.which("npm") is None, reason="buf comes from npm, and npm is not installed")
def test_buf_breaking_fails_on_a_renumbered_field(checkout: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert contract.check(checkout) == 0, capfd.readouterr()
    _edit(checkout, "  int64 count = 1;\n", "  int64 count = 99;\n")
    assert contract.check(checkout) != 0
    assert "StatsResponse" in capfd.readouterr().out
    # Committed together with a line in BREAKING.md, the same edit is an announced break and passes.
    with (checkout / "protos/BREAKING.md").open("a") as marker:
        marker.write("- test: StatsResponse.count renumbered\n")
    _git(checkout, "commit", "-q", "-am", "announced break")
    assert contract.check(checkout) == 0, capfd.readouterr()


@pytest.mark.slow  # buf (from npm) on a copy of the repository
@pytest.mark.skipif(shutil.which("npm") is None, reason="buf comes from npm, and npm is not installed")
def test_buf_lint_wants_a_comment_on_every_field(checkout: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _edit(checkout, "  uint32 max_text_chars = 19;\n", "  uint32 max_text_chars = 19;\n  uint32 extra = 99;\n")
    assert contract.check(checkout) != 0
    assert "extra" in capfd.readouterr().out
