"""Killing things mid-run: the loader (SIGKILL, then a rerun) and the embedder (restart on the same port)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from index_service.pg import EmbeddedPostgres
from loader.__main__ import EXIT_OK, main
from loader.tests.conftest import (
    IndexServer,
    kill,
    start_embedder_process,
    start_index,
    stop_index,
)
from tests.support.loading import assert_one_row_per_image, loader_process, wait_for_rows
from tests.support.net import free_port
from tests.support.trees import caltech_like

# No corrupt or junk files here: every image must end up stored exactly once.
CATEGORIES = [f"{i:03d}.thing{i}" for i in range(1, 13)]


def test_sigkill_mid_run_then_rerun_gives_exactly_one_row_per_image(tmp_path: Path, tiny_bundle_dir: Path,
                                                                    index: IndexServer) -> None:
    tree = caltech_like(tmp_path / "data", per_category=(12, 14), size=(120, 260), categories=CATEGORIES)
    for rel in tree.corrupt + tree.not_images:  # only loadable images here: the run must end with EXIT_OK
        (tree.root / rel).unlink()
    total = len(tree.images)
    # The embedder runs as its own process: an in-process one keeps a thread waiting on the killed
    # client's stream (an embedder issue), which would hold up the end of the test session.
    port = free_port()
    embedder_proc = start_embedder_process(tiny_bundle_dir, port)
    args = ["caltech256", "--path", str(tree.root), "--embedder", f"127.0.0.1:{port}", "--index", index.addr,
            "--batch-size", "2", "--in-flight", "1", "--upsert-workers", "1", "--progress", "none"]
    proc = loader_process(*args)
    try:
        at_kill = wait_for_rows(index, 10)
        kill(proc)
    finally:
        kill(proc)
    time.sleep(0.5)  # an upsert the server had already received still commits
    before = index.count()
    assert 10 <= at_kill <= before < total, "the loader must be killed mid-run"

    report = tmp_path / "rerun.jsonl"
    try:
        assert main([*args, "--report", str(report)]) == EXIT_OK
    finally:
        kill(embedder_proc)
    summary = json.loads(report.read_text().splitlines()[-1])["summary"]
    assert summary["already_present"] == before and summary["loaded"] == total - before
    assert summary["failed"] == 0
    assert_one_row_per_image(index, tree.images, tmp_path / "index-data" / "media")


def test_embedder_killed_and_restarted_on_the_same_port(tmp_path: Path, tiny_bundle_dir: Path,
                                                        index: IndexServer) -> None:
    tree = caltech_like(tmp_path / "data", per_category=(12, 14), size=(120, 260), categories=CATEGORIES)
    port = free_port()
    embedder = start_embedder_process(tiny_bundle_dir, port)
    report = tmp_path / "report.jsonl"
    outcome: dict[str, int] = {}
    args = ["caltech256", "--path", str(tree.root), "--embedder", f"127.0.0.1:{port}", "--index", index.addr,
            "--batch-size", "2", "--in-flight", "2", "--progress", "none", "--report", str(report),
            "--retry-s", "60"]
    runner = threading.Thread(target=lambda: outcome.setdefault("code", main(args)), daemon=True)
    runner.start()
    try:
        wait_for_rows(index, 10)
        kill(embedder)
        down_at = index.count()
        time.sleep(1.0)  # the loader sees UNAVAILABLE and backs off meanwhile
        embedder = start_embedder_process(tiny_bundle_dir, port)
        runner.join(timeout=120)
        assert not runner.is_alive()
    finally:
        kill(embedder)
    summary = json.loads(report.read_text().splitlines()[-1])["summary"]
    assert down_at < len(tree.images), "the embedder must be killed mid-run"
    assert outcome["code"] == 1  # the corrupt file, as in a run without a restart
    assert summary["found"] == tree.found and summary["loaded"] == len(tree.images)
    assert summary["already_present"] == 0 and summary["failed"] == 1
    assert summary["skipped"] == {"not an image": 1}
    assert_one_row_per_image(index, tree.images, tmp_path / "index-data" / "media")


def test_index_restarted_mid_run(tmp_path: Path, embedder: str, pg: EmbeddedPostgres) -> None:
    tree = caltech_like(tmp_path / "data", per_category=(12, 14), size=(120, 260), categories=CATEGORIES)
    data_dir = tmp_path / "index-data"
    index = start_index(pg, data_dir)
    port = int(index.addr.rsplit(":", 1)[1])
    report = tmp_path / "report.jsonl"
    outcome: dict[str, int] = {}
    args = ["caltech256", "--path", str(tree.root), "--embedder", embedder, "--index", index.addr,
            "--batch-size", "2", "--in-flight", "2", "--progress", "none", "--report", str(report),
            "--retry-s", "60"]
    runner = threading.Thread(target=lambda: outcome.setdefault("code", main(args)), daemon=True)
    runner.start()
    try:
        wait_for_rows(index, 10)
        stop_index(index)
        time.sleep(1.0)  # Exists and Upsert get UNAVAILABLE and back off meanwhile
        index = start_index(pg, data_dir, dsn=index.dsn, port=port)
        runner.join(timeout=120)
        assert not runner.is_alive()
        summary = json.loads(report.read_text().splitlines()[-1])["summary"]
        assert outcome["code"] == 1 and summary["failed"] == 1  # the corrupt file only
        # An upsert that committed just before the stop may be counted as present on its retry.
        assert summary["loaded"] + summary["already_present"] == len(tree.images)
        assert_one_row_per_image(index, tree.images, data_dir / "media")
    finally:
        stop_index(index)


def test_a_frozen_embedder_is_detected_by_the_stream_timeout(tmp_path: Path, tiny_bundle_dir: Path,
                                                             index: IndexServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    tree = caltech_like(tmp_path / "data", per_category=(12, 14), size=(120, 260), categories=CATEGORIES)
    port = free_port()
    embedder = start_embedder_process(tiny_bundle_dir, port)
    report = tmp_path / "report.jsonl"
    outcome: dict[str, int] = {}
    args = ["caltech256", "--path", str(tree.root), "--embedder", f"127.0.0.1:{port}", "--index", index.addr,
            "--batch-size", "2", "--in-flight", "2", "--progress", "none", "--report", str(report),
            "--timeout", "1.5", "--retry-s", "60"]
    runner = threading.Thread(target=lambda: outcome.setdefault("code", main(args)), daemon=True)
    runner.start()
    try:
        wait_for_rows(index, 10)
        embedder.send_signal(signal.SIGSTOP)  # alive, connected, silent: only a timeout can tell
        time.sleep(3.0)
        embedder.send_signal(signal.SIGCONT)
        runner.join(timeout=120)
        assert not runner.is_alive()
    finally:
        embedder.send_signal(signal.SIGCONT)
        kill(embedder)
    assert "no answer from the embedder for 2 s" in caplog.text
    summary = json.loads(report.read_text().splitlines()[-1])["summary"]
    assert outcome["code"] == 1 and summary["failed"] == 1
    assert summary["loaded"] == len(tree.images) and summary["already_present"] == 0
    assert_one_row_per_image(index, tree.images, tmp_path / "index-data" / "media")
