"""`python -m loader sync` against the real embedder (tiny model) and index (embedded Postgres)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import REGISTRY

from loader.__main__ import main
from loader.tests.conftest import REPO, IndexServer
from protos.semsearch.v1 import index_pb2
from tests.support.trees import encoded

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3


def embedded_images() -> float:
    """Images the in-process embedder has embedded so far (its Prometheus counter)."""
    return REGISTRY.get_sample_value("embedder_items_total", {"kind": "image", "outcome": "ok"}) or 0.0


def sync(root: Path, embedder: str, index: IndexServer, capsys: object, *extra: str) -> tuple[int, dict]:
    """One in-process pass; the exit status and its JSON summary."""
    code = main(["sync", str(root), "--embedder", embedder, "--index", index.addr, "--batch-size", "4", "--json",
                 "-q", *extra])
    out = capsys.readouterr().out.strip().splitlines()  # type: ignore[attr-defined]
    return code, json.loads(out[-1]) if out else {}


def files_of(index: IndexServer, source: str) -> dict[str, index_pb2.FileRecord]:
    """Every file the index records under a source."""
    reply = index.stub.ListFiles(index_pb2.ListFilesRequest(source=source, limit=1000), timeout=10)
    return {f.path: f for f in reply.files}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(path: Path, seed: int, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded(seed, 64, 48, fmt))
    return path


def test_add_delete_rename_modify_and_a_vanished_folder_give_exactly_the_expected_rows(
        tmp_path: Path, embedder: str, index: IndexServer, capsys: object) -> None:
    root = tmp_path / "photos"
    write(root / "a.jpg", 1)
    write(root / "b.jpg", 2)
    write(root / "dup.jpg", 1)  # same bytes as a.jpg: one row, two files
    write(root / "sub" / "c.jpg", 3)
    write(root / "sub" / "d.png", 4, "PNG")
    write(root / "gone" / "e.jpg", 5)
    write(root / "gone" / "f.jpg", 6)
    (root / "notes.txt").write_text("not a picture")
    (root / os.fsdecode(b"latin1-\xe9.jpg")).write_bytes(encoded(9, 64, 48))  # a name the index cannot store
    before = embedded_images()
    code, first = sync(root, embedder, index, capsys)
    assert code == EXIT_OK, first
    assert (first["added"], first["linked"], first["removed"], first["failed"]) == (6, 1, 0, 0)
    assert first["skipped"] == {"not an image": 1, "name not UTF-8": 1}
    assert embedded_images() - before == 6
    assert sorted(files_of(index, "photos")) == ["a.jpg", "b.jpg", "dup.jpg", "gone/e.jpg", "gone/f.jpg",
                                                 "sub/c.jpg", "sub/d.png"]
    rows = {m.sha256: m for m in index.metas()}
    assert len(rows) == 6 and {m.source for m in rows.values()} == {"photos"}
    assert rows[sha(root / "sub" / "c.jpg")].label == "sub"
    c_id = rows[sha(root / "sub" / "c.jpg")].id
    old_a = sha(root / "a.jpg")

    (root / "b.jpg").unlink()
    (root / "renamed").mkdir()
    (root / "sub" / "c.jpg").rename(root / "renamed" / "c2.jpg")
    write(root / "a.jpg", 7)  # new content under an old name
    write(root / "new.jpg", 8)
    shutil.rmtree(root / "gone")
    d = root / "sub" / "d.png"
    os.utime(d, ns=(d.stat().st_atime_ns, d.stat().st_mtime_ns + 10**9))  # touched, same bytes
    before = embedded_images()
    code, second = sync(root, embedder, index, capsys)
    assert code == EXIT_OK, second
    assert (second["added"], second["linked"], second["updated"], second["unchanged"]) == (1, 1, 2, 1), second
    assert (second["removed"], second["deleted_images"]) == (4, 3), second
    assert embedded_images() - before == 2  # a.jpg's new content and new.jpg; nothing for the renamed file
    records = files_of(index, "photos")
    assert sorted(records) == ["a.jpg", "dup.jpg", "new.jpg", "renamed/c2.jpg", "sub/d.png"]
    rows = {m.sha256: m for m in index.metas()}
    assert set(rows) == {old_a, sha(root / "a.jpg"), sha(root / "new.jpg"), sha(root / "renamed" / "c2.jpg"),
                         sha(d)}
    assert rows[sha(root / "renamed" / "c2.jpg")].id == c_id  # moved: the same row, not a new one
    assert rows[sha(root / "renamed" / "c2.jpg")].file_name == "renamed/c2.jpg"
    assert rows[old_a].file_name == "dup.jpg"  # its other file took over the name a.jpg lost
    for path, record in records.items():
        assert record.sha256 == sha(root / path) and record.image_id == rows[record.sha256].id
        assert record.mtime_ns == (root / path).stat().st_mtime_ns

    before = embedded_images()
    code, third = sync(root, embedder, index, capsys)
    assert code == EXIT_OK
    assert third["unchanged"] == 5 and third["added"] + third["linked"] + third["updated"] + third["removed"] == 0
    assert embedded_images() == before


def test_uploads_are_never_deleted_and_unreadable_files_keep_their_rows(
        tmp_path: Path, embedder: str, index: IndexServer, capsys: object) -> None:
    root = tmp_path / "album"
    uploaded = write(root / "up.jpg", 11).read_bytes()
    write(root / "kept.jpg", 12)
    # The same picture stored earlier another way (as an upload is): a row without a file record.
    (tmp_path / "one").mkdir()
    shutil.copy(root / "up.jpg", tmp_path / "one" / "up.jpg")
    assert main(["dir", str(tmp_path / "one"), "--source", "upload", "--embedder", embedder, "--index", index.addr,
                 "--progress", "none", "-q"]) == EXIT_OK
    capsys.readouterr()  # type: ignore[attr-defined]
    code, first = sync(root, embedder, index, capsys)
    assert code == EXIT_OK and (first["added"], first["linked"]) == (1, 1)
    (root / "up.jpg").unlink()
    (root / "kept.jpg").unlink()
    (root / "kept.jpg").symlink_to(root / "nowhere.jpg")  # a file that cannot be read (a dangling link)
    code, second = sync(root, embedder, index, capsys)
    assert code == EXIT_FAILED_FILES and second["failed"] == 1
    assert (second["removed"], second["deleted_images"]) == (1, 0)
    assert sorted(files_of(index, "album")) == ["kept.jpg"]
    shas = {m.sha256 for m in index.metas()}
    assert hashlib.sha256(uploaded).hexdigest() in shas and len(shas) == 2


def test_bad_dir_arguments_stop_with_status_2_and_remove_nothing(
        tmp_path: Path, embedder: str, index: IndexServer, capsys: object) -> None:
    root = tmp_path / "pics"
    write(root / "x.jpg", 21)
    assert sync(root, embedder, index, capsys)[0] == EXIT_OK
    a_file = root / "x.jpg"
    for bad in (tmp_path / "missing", a_file):
        code = main(["sync", str(bad), "--source", "pics", "--embedder", embedder, "--index", index.addr])
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        assert code == EXIT_USAGE and ("does not exist" in err or "is not a folder" in err)
    # An emptied folder (an unmounted disk looks so) is refused, not taken as "delete everything".
    a_file.unlink()
    code, _ = sync(root, embedder, index, capsys)
    assert code == EXIT_STOPPED
    assert index.count() == 1 and list(files_of(index, "pics")) == ["x.jpg"]
    code, summary = sync(root, embedder, index, capsys, "--allow-empty")
    assert code == EXIT_OK and summary["deleted_images"] == 1 and index.count() == 0


def cli(root: Path, embedder: str, index: IndexServer, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "loader", "sync", str(root), "--embedder", embedder, "--index", index.addr,
         "--json", "-q", *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_watch_follows_files_created_and_removed_and_stops_on_sigterm(
        tmp_path: Path, embedder: str, index: IndexServer) -> None:
    root = tmp_path / "live"
    write(root / "first.jpg", 31)
    proc = cli(root, embedder, index, "--watch", "--settle", "0.3", "--batch-size", "4")
    passes: list[dict] = []
    reader = threading.Thread(target=lambda: passes.extend(json.loads(line) for line in proc.stdout or []),
                              daemon=True)
    reader.start()
    try:
        wait_for("the first pass", lambda: index.count() == 1)
        for i in range(3):
            write(root / "new" / f"n{i}.jpg", 40 + i)
        wait_for("the new files", lambda: sorted(files_of(index, "live")) == [
            "first.jpg", "new/n0.jpg", "new/n1.jpg", "new/n2.jpg"])
        assert index.count() == 4
        (root / "first.jpg").unlink()
        shutil.rmtree(root / "new")
        write(root / "last.jpg", 45)
        wait_for("the removals", lambda: index.count() == 1 and list(files_of(index, "live")) == ["last.jpg"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == EXIT_OK
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    assert sum(p["added"] for p in passes) == 5 and sum(p["deleted_images"] for p in passes) == 4


def test_kill_9_mid_sync_then_a_rerun_loses_and_doubles_nothing(
        tmp_path: Path, embedder: str, index: IndexServer, capsys: object) -> None:
    root = tmp_path / "big"
    for i in range(120):
        write(root / f"f{i // 30}" / f"{i:03d}.jpg", 100 + i)
    proc = cli(root, embedder, index, "--batch-size", "2", "--upsert-workers", "1")
    try:
        wait_for("the first rows", lambda: index.count() > 0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    at_kill = index.count()
    assert 0 < at_kill < 120
    code, summary = sync(root, embedder, index, capsys)
    assert code == EXIT_OK, summary
    assert summary["added"] + summary["unchanged"] + summary["linked"] == 120
    records = files_of(index, "big")
    assert len(records) == 120 == index.count()
    metas = index.metas()
    assert len({m.sha256 for m in metas}) == 120
    for path, record in records.items():
        assert record.sha256 == sha(root / path)
    code, again = sync(root, embedder, index, capsys)
    assert code == EXIT_OK and again["unchanged"] == 120
