"""Download (range resume, MD5) against a local HTTP server; safe extraction; the archive path end to end."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loader import archive
from loader.__main__ import EXIT_FAILED_FILES, EXIT_STOPPED, main
from loader.archive import ArchiveError
from loader.tests.conftest import IndexServer
from tests.support.trees import caltech_like, evil_tar, tar_of


@dataclass
class Served:
    """What the test server hands out and what it saw."""

    data: bytes = b""
    cut_after: int | None = None  # drop the connection after this many bytes, once
    ranges: bool = True
    seen: list[str | None] = field(default_factory=list)  # the Range header of each request
    url: str = ""


@pytest.fixture
def served() -> Iterator[Served]:
    """An HTTP server on 127.0.0.1 with Range support that can cut a transfer short once."""
    state = Served()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            header = self.headers.get("Range")
            state.seen.append(header)
            if self.path.endswith(".missing"):
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", header or "")
            if state.ranges and match:
                start = int(match[1])
                if start >= len(state.data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(state.data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(state.data) - 1}/{len(state.data)}")
            else:
                self.send_response(200)
            body = state.data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                self.wfile.write(body[: state.cut_after])
                state.cut_after = None
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/256_ObjectCategories.tar"
    yield state
    server.shutdown()
    server.server_close()


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path: Path, served: Served) -> None:
    served.data = bytes(range(256)) * 4000
    served.cut_after = 300_000
    dest = archive.download(served.url, tmp_path / "a.tar", hashlib.md5(served.data).hexdigest(), progress=False)
    assert dest.read_bytes() == served.data
    assert served.seen == [None, "bytes=300000-"]
    assert not (tmp_path / "a.tar.part").exists()
    # Already complete and verified: no request at all.
    archive.download(served.url, dest, hashlib.md5(served.data).hexdigest(), progress=False)
    assert len(served.seen) == 2


def test_a_partial_file_from_an_earlier_run_is_continued(tmp_path: Path, served: Served) -> None:
    served.data = b"x" * 50_000 + b"y" * 50_000
    (tmp_path / "a.tar.part").write_bytes(served.data[:70_000])
    archive.download(served.url, tmp_path / "a.tar", hashlib.md5(served.data).hexdigest(), progress=False)
    assert served.seen == ["bytes=70000-"]
    assert (tmp_path / "a.tar").read_bytes() == served.data
    # A complete part file (HTTP 416 for the range after it) is verified and kept.
    (tmp_path / "b.tar.part").write_bytes(served.data)
    archive.download(served.url, tmp_path / "b.tar", hashlib.md5(served.data).hexdigest(), progress=False)
    assert (tmp_path / "b.tar").read_bytes() == served.data


def test_a_server_without_ranges_restarts_from_zero(tmp_path: Path, served: Served) -> None:
    served.data, served.ranges = b"z" * 10_000, False
    (tmp_path / "a.tar.part").write_bytes(b"garbage")
    archive.download(served.url, tmp_path / "a.tar", hashlib.md5(served.data).hexdigest(), progress=False)
    assert (tmp_path / "a.tar").read_bytes() == served.data


def test_a_bad_checksum_is_a_clear_error_and_the_file_is_dropped(tmp_path: Path, served: Served) -> None:
    served.data = b"not what you expected" * 100
    with pytest.raises(ArchiveError, match=r"checksum mismatch.*expected MD5 0{32}, got [0-9a-f]{32}"):
        archive.download(served.url, tmp_path / "a.tar", "0" * 32, progress=False)
    assert not (tmp_path / "a.tar").exists() and not (tmp_path / "a.tar.part").exists()
    assert archive.download(served.url, tmp_path / "a.tar", None, progress=False).exists()  # --md5 none


def test_http_errors_are_reported(tmp_path: Path, served: Served) -> None:
    with pytest.raises(ArchiveError, match="HTTP 404"):
        archive.download(served.url + ".missing", tmp_path / "a.tar", None, progress=False)
    assert served.seen == [None]  # a client error is not retried


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "symlink-relative"])
def test_path_escapes_reject_the_whole_archive(tmp_path: Path, kind: str) -> None:
    bad = evil_tar(tmp_path / "evil.tar", kind)
    dest = tmp_path / "out" / "deeper"
    with pytest.raises(ArchiveError, match="unsafe"):
        archive.extract(bad, dest)
    assert list(dest.iterdir()) == []  # not even the harmless member
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "escaped.txt").exists()
    assert not Path("/tmp/loader-absolute-escape.txt").exists()


def test_extract_makes_the_tree_and_refuses_to_overwrite(tmp_path: Path) -> None:
    tree = caltech_like(tmp_path / "src", categories=["001.ak47", "056.dog"])
    tar = tar_of(tree.root, tmp_path / "c.tar")
    made = archive.extract(tar, tmp_path / "out")
    assert made == [tmp_path / "out" / "256_ObjectCategories"]
    assert (made[0] / "056.dog" / "greg" / "dog_0.jpg").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["256_ObjectCategories"]  # no staging left
    with pytest.raises(ArchiveError, match="already exists"):
        archive.extract(tar, tmp_path / "out")
    (tmp_path / "junk.tar").write_bytes(b"this is no tar")
    with pytest.raises(ArchiveError, match="not a readable tar"):
        archive.extract(tmp_path / "junk.tar", tmp_path / "out2")


def test_caltech256_download_extract_and_load(tmp_path: Path, served: Served, embedder: str,
                                              index: IndexServer) -> None:
    tree = caltech_like(tmp_path / "src", categories=["001.ak47", "056.dog", "198.spider", "257.clutter"])
    served.data = tar_of(tree.root, tmp_path / "c.tar").read_bytes()
    served.cut_after = len(served.data) // 3
    md5 = hashlib.md5(served.data).hexdigest()
    data_dir = tmp_path / "data"
    common = ["caltech256", "--data-dir", str(data_dir), "--url", served.url, "--embedder", embedder,
              "--index", index.addr, "--progress", "none"]

    assert main([*common, "--download", "--md5", "f" * 32]) == EXIT_STOPPED
    assert not (data_dir / "256_ObjectCategories").exists()

    report = tmp_path / "report.jsonl"
    assert main([*common, "--download", "--md5", md5, "--report", str(report)]) == EXIT_FAILED_FILES
    summary = json.loads(report.read_text().splitlines()[-1])["summary"]
    assert summary["found"] == tree.found and summary["loaded"] == len(tree.images)
    assert summary["skipped"] == {"known junk": 3, "not an image": 1} and summary["failed"] == 1
    assert index.labels() == dict(tree.labels)
    assert (data_dir / "256_ObjectCategories.tar").exists()
    # The extracted tree is found again without download or extraction.
    requests = len(served.seen)
    assert main([*common, "--report", str(report)]) == EXIT_FAILED_FILES
    assert len(served.seen) == requests
    assert json.loads(report.read_text().splitlines()[-1])["summary"]["already_present"] == len(tree.images)
