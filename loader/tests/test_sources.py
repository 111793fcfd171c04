"""Walking, labels, junk rules, sharding, reading, settings and the progress/summary text, without services."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest

from loader import clients, sources
from loader.config import ConfigError, LoaderEnv
from loader.report import Progress, Report, Summary
from loader.sources import JUNK, NOT_IMAGE, Shard
from protos.semsearch.v1 import embedder_pb2
from tests.support.trees import caltech_like, encoded


@pytest.mark.parametrize(("rel", "label"), [
    ("056.dog/056_0001.jpg", "dog"), ("257.clutter/257_0001.jpg", "clutter"),
    ("145.motorbikes-101/x.jpg", "motorbikes-101"), ("misc/x.jpg", "misc"), ("x.jpg", ""),
])
def test_caltech_labels(rel: str, label: str) -> None:
    assert sources.caltech_label(PurePosixPath(rel)) == label


def test_caltech_junk_rules() -> None:
    junk = sources.is_caltech_junk
    assert junk(PurePosixPath("056.dog/greg/x.jpg")) and junk(PurePosixPath("056.dog/greg/a/b.jpg"))
    assert junk(PurePosixPath("198.spider/RENAME2"))
    assert not junk(PurePosixPath("056.dog/056_0001.jpg")) and not junk(PurePosixPath("056.dog/gregory.jpg"))


def test_walk_order_labels_and_skips(tmp_path: Path) -> None:
    tree = caltech_like(tmp_path, categories=["056.dog", "001.ak47", "198.spider"])
    found = list(sources.walk(tree.root, sources.caltech_label, sources.is_caltech_junk))
    # Stable order: folders and files sorted, each folder's files before its sub-folders.
    assert found == list(sources.walk(tree.root, sources.caltech_label, sources.is_caltech_junk))
    tops = [c.rel.split("/")[0] for c in found]
    assert tops == sorted(tops)
    assert sorted(c.rel for c in found if c.skip == JUNK) == sorted(tree.junk)
    assert [c.rel for c in found if c.skip == NOT_IMAGE] == tree.not_images
    labels = Counter(c.label for c in found if c.skip is None and c.rel not in tree.corrupt)
    assert labels == tree.labels
    assert sources.caltech_root(tmp_path) == tree.root and sources.caltech_root(tree.root) == tree.root


def test_dir_labels_and_hidden_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    for rel in ("top.jpg", "a/one.png", "a/b/two.jpg", ".git/three.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    found = {c.rel: c.label for c in sources.walk(tmp_path, sources.parent_label("root"))}
    assert found == {"top.jpg": "root", "a/one.png": "a", "a/b/two.jpg": "b"}
    assert {c.label for c in sources.walk(tmp_path, sources.fixed_label("x"))} == {"x"}


def test_shards_partition_the_files_stably_and_evenly() -> None:
    rels = [f"{c:03d}.cat/{c:03d}_{i:04d}.jpg" for c in range(1, 50) for i in range(40)]
    for n in (1, 2, 3, 8):
        owners = [[Shard(i, n).owns(r) for i in range(n)] for r in rels]
        assert all(sum(o) == 1 for o in owners)  # each file in exactly one shard
        sizes = [sum(o[i] for o in owners) for i in range(n)]
        assert min(sizes) > 0.8 * len(rels) / n
    assert Shard.parse("1/2") == Shard(1, 2) and Shard.parse(" 0 / 4 ") == Shard(0, 4)
    for bad in ("2/2", "1", "-1/2", "0/0", "a/b"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_read_by_content(tmp_path: Path) -> None:
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"):  # every format the embedder decodes
        (tmp_path / fmt).write_bytes(encoded(1, 16, 16, fmt))
        assert isinstance(sources.read(sources.Candidate(tmp_path / fmt, fmt, ""), 10**6), sources.FileData)
    files = {"ok.jpg": encoded(1, 16, 16), "empty.jpg": b"", "text.jpg": b"hello", "big.jpg": encoded(2, 300, 300),
             "doc.jpg": b"%PDF-1.7 not a picture"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    got = {name: sources.read(sources.Candidate(tmp_path / name, name, ""), max_bytes=4000) for name in files}
    assert got["empty.jpg"] == sources.EMPTY and got["big.jpg"] == sources.TOO_LARGE
    assert got["text.jpg"] == got["doc.jpg"] == NOT_IMAGE
    assert isinstance(got["ok.jpg"], sources.FileData) and len(got["ok.jpg"].sha256) == 64
    with pytest.raises(OSError):
        sources.read(sources.Candidate(tmp_path / "gone.jpg", "gone.jpg", ""), 4000)


def test_report_file_progress_lines_and_summary(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = Progress(interval_s=1e-9, stream=out, bar=False)
    report = Report(tmp_path / "r.jsonl", progress)
    report.found(5)
    report.loaded(2)
    report.present()
    report.skipped("a.txt", NOT_IMAGE)
    report.failed("b.jpg", "embedder: truncated")
    summary = report.finish()
    assert summary.done == summary.found == 5
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert '"file": "b.jpg", "outcome": "failed", "reason": "embedder: truncated"' in lines[1]
    assert '"loaded": 2' in lines[-1] and '"already_present": 1' in lines[-1]
    assert "5/5 files (100%)" in out.getvalue().splitlines()[-1]
    text = summary.text()
    assert "loaded           2" in text and "skipped          1 (1 not an image)" in text
    assert "would load" in Summary(dry_run=True).text()


def test_progress_bar_on_a_terminal_shows_rate_and_eta() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, bar=True)
    progress.start(10)
    progress.advance(4, Summary())
    progress.close()
    assert "4/10" in out.getvalue() and "img/s" in out.getvalue() and "<" in out.getvalue()  # ETA as elapsed<left


def test_batch_limit_comes_from_the_embedder_with_a_fallback() -> None:
    assert clients.images_per_request(embedder_pb2.ModelInfo()) == clients.FALLBACK_IMAGES_PER_REQUEST == 256
    published = SimpleNamespace(max_images_per_request=64)  # the field ModelInfo is getting
    assert clients.images_per_request(published) == 64  # type: ignore[arg-type]


def test_loader_variables_blank_means_default_and_bad_ones_are_named() -> None:
    assert LoaderEnv.from_env({"LOADER_SHARD": " ", "LOADER_LOG_FORMAT": "JSON"}) == LoaderEnv(log_format="json")
    for name, value in (("LOADER_SHARD", "2/2"), ("LOADER_LOG_FORMAT", "xml")):
        with pytest.raises(ConfigError, match=name):
            LoaderEnv.from_env({name: value})
