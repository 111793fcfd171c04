"""The loader passes on what the embedder read from each file (its facts) and the file's mtime, apart."""

from __future__ import annotations

import os
from pathlib import Path

from loader.clients import Model
from loader.config import LoaderConfig
from loader.pipeline import Pipeline
from loader.report import Report
from loader.sources import Candidate, FileData, read
from protos.semsearch.v1 import common_pb2, embedder_pb2
from tests.support import exif as written


def test_read_keeps_the_files_mtime_in_nanoseconds(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(written.photo(written.full()))
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    got = read(Candidate(path, "a.jpg", "a"), 1 << 20)
    assert isinstance(got, FileData) and got.mtime_ns == 1_600_000_000_123_456_789


def test_upsert_items_carry_the_embedders_facts_and_the_mtime(tmp_path: Path) -> None:
    pipeline = Pipeline(LoaderConfig(), Report(None))
    pipeline.model = Model("fake@1", 2)
    f = FileData(Candidate(tmp_path / "a.jpg", "a.jpg", "a"), b"bytes", "ab" * 32, mtime_ns=42)
    facts = common_pb2.PhotoFacts(taken_at=1622894582, camera_model="EOS R5", latitude=1.5, longitude=2.5)
    response = embedder_pb2.EmbedImagesResponse(model_id="fake@1", results=[embedder_pb2.ImageEmbedding(
        key="0", embedding=[1.0, 0.0], width=4, height=3, content_type="image/jpeg", facts=facts)])
    pipeline.embedded([f], response)
    [(_, item)] = pipeline.upsert_q.get_nowait()
    assert item.facts == facts and item.file_mtime_ns == 42 and not item.facts.HasField("taken_offset_minutes")
