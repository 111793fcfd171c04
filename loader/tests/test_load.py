"""Loading generated trees through the real embedder and index: counts, labels, reruns, shards, errors."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from index_service.pg import EmbeddedPostgres
from loader.__main__ import EXIT_FAILED_FILES, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, main
from loader.tests.conftest import IndexServer, start_index, stop_index
from protos.semsearch.v1 import index_pb2
from tests.support.trees import caltech_like, encoded


def load(tmp_path: Path, *args: str, name: str = "report.jsonl") -> tuple[int, dict[str, Any], list[dict]]:
    """Run the CLI in process; returns the exit status, the summary and the per-file records of its report."""
    report = tmp_path / name
    code = main([*args, "--report", str(report), "--progress", "none"])
    lines = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    summary = lines[-1]["summary"] if lines and "summary" in lines[-1] else {}
    return code, summary, [r for r in lines if "file" in r]


def services(embedder: str, index: IndexServer) -> list[str]:
    return ["--embedder", embedder, "--index", index.addr, "--batch-size", "8"]


def test_caltech_tree_gives_exact_counts_labels_and_metadata(tmp_path: Path, embedder: str,
                                                             index: IndexServer) -> None:
    tree = caltech_like(tmp_path / "data")
    code, summary, records = load(tmp_path, "caltech256", "--path", str(tree.root.parent),
                                  *services(embedder, index))
    assert code == EXIT_FAILED_FILES  # the corrupt JPEG
    assert summary["found"] == tree.found == len(tree.images) + 5
    assert summary["loaded"] == len(tree.images) and summary["already_present"] == 0
    assert summary["skipped"] == {"known junk": 3, "not an image": 1}
    assert summary["failed"] == 1
    failed = [r for r in records if r["outcome"] == "failed"]
    assert [r["file"] for r in failed] == tree.corrupt and failed[0]["reason"].startswith("embedder:")
    assert sorted(r["file"] for r in records if r["outcome"] == "skipped") == sorted(tree.junk + tree.not_images)

    assert index.count() == len(tree.images)
    assert index.labels() == dict(tree.labels)
    assert {"dog", "clutter", "motorbikes-101", "head-phones", "ak47"} <= set(index.labels())
    metas = {m.file_name: m for m in index.metas()}
    assert sorted(metas) == sorted(tree.images)
    dog = metas["056.dog/056_0001.jpg"]
    data = (tree.root / "056.dog" / "056_0001.jpg").read_bytes()
    assert dog.label == "dog" and dog.source == "caltech256" and dog.content_type == "image/jpeg"
    assert dog.sha256 == hashlib.sha256(data).hexdigest() and dog.size_bytes == len(data)
    assert dog.width >= 48 and dog.height >= 48 and dog.model_id.startswith("random-tiny@")
    assert metas["056.dog/056_0002.png"].content_type == "image/png"

    # A rerun sends nothing new: everything is already present, one row per image.
    code, again, _ = load(tmp_path, "caltech256", "--path", str(tree.root), *services(embedder, index),
                          name="again.jsonl")
    assert code == EXIT_FAILED_FILES
    assert again["loaded"] == 0 and again["already_present"] == len(tree.images) and again["failed"] == 1
    assert index.count() == len(tree.images)


def test_dir_labels_sources_limit_and_duplicates(tmp_path: Path, embedder: str, index: IndexServer,
                                                  pg: EmbeddedPostgres) -> None:
    root = tmp_path / "photos"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "puppies").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    (root / "cats" / "a.jpg").write_bytes(encoded(1, 80, 60))
    (root / "cats" / "b.JPEG").write_bytes(encoded(2, 80, 60))
    (root / "dogs" / "puppies" / "c.png").write_bytes(encoded(3, 80, 60, "PNG"))
    (root / "top.webp").write_bytes(encoded(4, 80, 60, "WEBP"))
    (root / "copy-of-a.jpg").write_bytes(encoded(1, 80, 60))  # same content as cats/a.jpg
    (root / "fake.jpg").write_bytes(b"<html>not an image</html>")
    (root / "empty.png").write_bytes(b"")
    (root / ".thumbnails" / "t.jpg").write_bytes(encoded(5, 20, 20))  # hidden folders are not entered

    code, summary, _ = load(tmp_path, "dir", str(root), *services(embedder, index))
    assert code == EXIT_OK
    assert summary["found"] == 7 and summary["loaded"] == 4 and summary["already_present"] == 1
    assert summary["skipped"] == {"not an image": 1, "empty file": 1}
    # Top-level files come first in the walk, so the copy is stored and cats/a.jpg is "already present".
    assert index.labels() == {"cats": 1, "puppies": 1, "photos": 2}
    assert {m.source for m in index.metas()} == {"photos"}

    other = start_index(pg, tmp_path / "other-index")
    try:
        code, summary, _ = load(tmp_path, "dir", str(root), "--label", "pets", "--source", "phone", "--limit", "1",
                                *services(embedder, other), name="limited.jsonl")
        assert code == EXIT_OK and summary["found"] == 1 and summary["loaded"] == 1
        assert other.labels() == {"pets": 1} and {m.source for m in other.metas()} == {"phone"}
        code, summary, _ = load(tmp_path, "dir", str(root), "--no-label", *services(embedder, other),
                                name="unlabelled.jsonl")
        assert summary["loaded"] == 3 and summary["already_present"] == 2
        assert other.labels() == {"pets": 1, "": 3}
    finally:
        stop_index(other)


def test_two_shards_load_the_union_without_overlap(tmp_path: Path, embedder: str, index: IndexServer) -> None:
    tree = caltech_like(tmp_path / "data", per_category=(4, 5, 6))
    results: dict[int, tuple[int, dict, list]] = {}

    def shard(i: int) -> None:
        results[i] = load(tmp_path, "caltech256", "--path", str(tree.root), "--shard", f"{i}/2",
                          "--source", f"shard{i}", *services(embedder, index), name=f"shard{i}.jsonl")

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s0, s1 = results[0][1], results[1][1]
    assert s0["found"] + s1["found"] == tree.found
    assert s0["loaded"] > 0 and s1["loaded"] > 0
    assert s0["loaded"] + s1["loaded"] == len(tree.images) == index.count()
    by_source: dict[str, set[str]] = {"shard0": set(), "shard1": set()}
    for meta in index.metas():
        by_source[meta.source].add(meta.file_name)
    assert not by_source["shard0"] & by_source["shard1"]
    assert by_source["shard0"] | by_source["shard1"] == set(tree.images)


def test_dry_run_needs_no_services_and_finds_the_corrupt_file(tmp_path: Path) -> None:
    tree = caltech_like(tmp_path / "data")
    code, summary, records = load(tmp_path, "caltech256", "--path", str(tree.root), "--dry-run",
                                  "--embedder", "127.0.0.1:1", "--index", "127.0.0.1:1")
    assert code == EXIT_FAILED_FILES and summary["dry_run"]
    assert summary["loaded"] == len(tree.images) and summary["failed"] == 1
    assert [r["file"] for r in records if r["outcome"] == "failed"] == tree.corrupt


def test_dimension_mismatch_stops_before_loading(tmp_path: Path, embedder: str, pg: EmbeddedPostgres) -> None:
    tree = caltech_like(tmp_path / "data", categories=["001.ak47"])
    small = start_index(pg, tmp_path / "index-256", dim=256)
    try:
        code, summary, _ = load(tmp_path, "caltech256", "--path", str(tree.root), *services(embedder, small))
        assert code == EXIT_STOPPED
        assert "256-dimensional" in summary["stopped"] and "512" in summary["stopped"]
        assert small.count() == 0
    finally:
        stop_index(small)


def test_another_model_in_the_index_stops_with_a_clear_message(tmp_path: Path, embedder: str,
                                                               index: IndexServer) -> None:
    original = encoded(99, 32, 32)
    vector = np.zeros(512, dtype=np.float32)
    vector[0] = 1.0
    item = index_pb2.UpsertItem(sha256=hashlib.sha256(original).hexdigest(), original=original,
                                content_type="image/jpeg", embedding=vector.tolist(), model_id="other-clip@abc")
    assert index.stub.Upsert(index_pb2.UpsertRequest(items=[item]), timeout=10).results[0].created
    tree = caltech_like(tmp_path / "data", categories=["001.ak47"])
    code, summary, _ = load(tmp_path, "caltech256", "--path", str(tree.root), *services(embedder, index))
    assert code == EXIT_STOPPED and "other-clip@abc" in summary["stopped"] and "one model" in summary["stopped"]
    assert index.count() == 1


def test_an_unreachable_service_stops_after_the_retry_budget(tmp_path: Path, index: IndexServer) -> None:
    tree = caltech_like(tmp_path / "data", categories=["001.ak47"])
    code, summary, _ = load(tmp_path, "caltech256", "--path", str(tree.root), "--embedder", "127.0.0.1:1",
                            "--index", index.addr, "--retry-s", "1")
    assert code == EXIT_STOPPED and "UNAVAILABLE" in summary["stopped"] and "gave up" in summary["stopped"]


def test_a_batch_larger_than_the_embedder_takes_stops_before_loading(tmp_path: Path, embedder: str,
                                                                    index: IndexServer) -> None:
    tree = caltech_like(tmp_path / "data", categories=["001.ak47"])
    code, summary, _ = load(tmp_path, "caltech256", "--path", str(tree.root), "--embedder", embedder,
                            "--index", index.addr, "--batch-size", "1000")
    assert code == EXIT_STOPPED and "--batch-size 1000" in summary["stopped"] and "(256)" in summary["stopped"]
    assert index.count() == 0


def test_bad_options_exit_with_usage_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dir", str(tmp_path / "missing")]) == EXIT_USAGE
    assert main(["dir", str(tmp_path), "--batch-size", "0"]) == EXIT_USAGE
    assert main(["caltech256", "--data-dir", str(tmp_path)]) == EXIT_USAGE  # nothing there and no --download
    for name, value in (("LOADER_LOG_FORMAT", "xml"), ("LOADER_SHARD", "3/2")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            capsys.readouterr()
            assert main(["dir", str(tmp_path), "--dry-run"]) == EXIT_USAGE
            assert name in capsys.readouterr().err


def test_blank_variables_mean_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOADER_LOG_FORMAT", "LOADER_SHARD", "LOADER_EMBEDDER_ADDR", "LOADER_INDEX_ADDR"):
        monkeypatch.setenv(name, "  ")
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(encoded(1, 16, 16, "PNG"))
    code, summary, _ = load(tmp_path, "dir", str(tmp_path / "pics"), "--dry-run")
    assert code == EXIT_OK and summary["found"] == 1


def test_collection_option_loads_beside_another_model(tmp_path: Path, embedder: str, index: IndexServer) -> None:
    """The default collection holds another model; --collection loads into a collection of the embedder's."""
    import grpc

    from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc

    original = encoded(98, 32, 32)
    vector = np.zeros(512, dtype=np.float32)
    vector[0] = 1.0
    index.stub.Upsert(index_pb2.UpsertRequest(items=[index_pb2.UpsertItem(
        sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
        embedding=vector.tolist(), model_id="other-clip@abc")]), timeout=10)
    with grpc.insecure_channel(embedder) as channel:
        info = embedder_pb2_grpc.EmbedderStub(channel).GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10)
    index.stub.CreateCollection(index_pb2.CreateCollectionRequest(name="mine", model_id=info.model_id,
                                                                  dim=info.dim), timeout=10)
    tree = caltech_like(tmp_path / "data", categories=["001.ak47", "002.bat"])
    for rel in tree.corrupt + tree.not_images:
        (tree.root / rel).unlink()
    code, summary, _ = load(tmp_path, "caltech256", "--path", str(tree.root), "--collection", "mine",
                            *services(embedder, index))
    assert code == EXIT_OK and summary["loaded"] == len(tree.images)
    assert index.stub.Stats(index_pb2.StatsRequest(collection="mine"), timeout=10).count == len(tree.images)
    assert index.count() == 1, "the default collection is untouched"


def test_a_large_load_into_an_empty_collection_builds_the_index_after_the_rows(
        tmp_path: Path, embedder: str, pg: EmbeddedPostgres, caplog: pytest.LogCaptureFixture) -> None:
    """No flag to remember: the loader announces its size, the index defers, the loader builds at the end."""
    index = start_index(pg, tmp_path / "index-data", bulk_min_rows=5, bulk_idle_s=3600)
    try:
        tree = caltech_like(tmp_path / "data", categories=["001.ak47", "002.bat"])
        for rel in tree.corrupt + tree.not_images:
            (tree.root / rel).unlink()
        with caplog.at_level("INFO", logger="index_service.bulk"):
            code, summary, _ = load(tmp_path, "caltech256", "--path", str(tree.root), *services(embedder, index))
        assert code == EXIT_OK and summary["loaded"] == len(tree.images) >= 5
        assert any("built after the load" in r.getMessage() for r in caplog.records)
        stats = index.stub.Stats(index_pb2.StatsRequest(), timeout=10)
        assert stats.index_state == index_pb2.INDEX_STATE_READY and index.deps.repo.bulk.waiting() == []
    finally:
        stop_index(index)
