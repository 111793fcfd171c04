"""The loader as a child process, and what its tests check of the index afterwards."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from protos.semsearch.v1 import index_pb2

REPO = Path(__file__).resolve().parents[2]


class Counted(Protocol):
    """An index client that can count its rows and list their metadata."""

    def count(self) -> int: ...

    def metas(self) -> list[index_pb2.ImageMeta]: ...


def loader_process(*args: str) -> subprocess.Popen[str]:
    """`python -m loader ARGS` as a child process (stdout and stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "loader", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_rows(index: Counted, at_least: int, timeout_s: float = 60) -> int:
    """Poll the index until it holds at least `at_least` rows; returns the count seen.

    A poll: another process writes the rows and nothing tells this one when.
    """
    deadline = time.monotonic() + timeout_s
    while (count := index.count()) < at_least:
        assert time.monotonic() < deadline, f"only {count} rows after {timeout_s} s"
        time.sleep(0.01)
    return count


def assert_one_row_per_image(index: Counted, images: list[str], media_root: Path) -> None:
    """Every image is stored once, with exactly one file in the media store."""
    metas = index.metas()
    assert sorted(m.file_name for m in metas) == sorted(images)
    assert len({m.sha256 for m in metas}) == len(images)
    originals = {p.name for p in media_originals(media_root)}
    assert originals == {m.sha256 for m in metas}, "every row has its original file and there are no orphans"
    thumbs = {p.name.removesuffix(".thumb") for p in media_root.rglob("*.thumb")}
    assert thumbs <= originals, "a thumbnail without its original"


def media_originals(media_root: Path) -> list[Path]:
    """The originals in a media store (named by their sha256 alone; renditions and thumbnails carry a suffix)."""
    return [p for p in media_root.rglob("*") if p.is_file() and len(p.name) == 64]
