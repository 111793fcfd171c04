"""`python -m loader reembed` on the real embedded Postgres: two random models of different dimensions."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from loader.__main__ import EXIT_OK, EXIT_STOPPED, main
from loader.tests.conftest import IndexServer, kill
from loader.tests.fake_embedder import FakeEmbedder, serve, vector_of
from protos.semsearch.v1 import index_pb2
from tests.support.loading import loader_process

OLD, NEW = "rand-a@1", "rand-b@1"  # 512 and 384 dimensions
N = 160


def load_old(index: IndexServer, n: int = N) -> list[int]:
    """n images with model OLD's vectors in the default collection; returns their ids."""
    rng = np.random.default_rng(7)
    ids: list[int] = []
    for start in range(0, n, 40):
        items = []
        for i in range(start, min(n, start + 40)):
            original = rng.bytes(1500) + str(i).encode()
            items.append(index_pb2.UpsertItem(
                sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/png",
                thumbnail=b"\xff\xd8\xffthumb" + str(i).encode(), width=8, height=8, label=f"l{i % 5}",
                source="test", file_name=f"{i}.png", embedding=vector_of(original, 512, OLD).tolist(), model_id=OLD))
        ids += [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=30).results]
    return ids


class Searcher:
    """Searches through the default alias until stopped, counting failures and the collections it saw."""

    def __init__(self, index: IndexServer, ids: list[int]) -> None:
        self.index, self.ids = index, ids
        self.failures: list[str] = []
        self.seen: list[str] = []
        self.searches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Searcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        rng = np.random.default_rng(3)
        while not self._stop.is_set():
            try:
                # Ids survive a re-embed, so a search by a stored image works before, during and after the swap.
                image_id = int(rng.choice(self.ids))
                hits = self.index.stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=image_id, k=5), timeout=10).hits
                assert len(hits) == 5, f"{len(hits)} hits"
                collection = self.index.stub.Stats(index_pb2.StatsRequest(), timeout=10).collection
                if not self.seen or self.seen[-1] != collection:
                    self.seen.append(collection)
                self.searches += 1
            except (grpc.RpcError, AssertionError) as err:
                self.failures.append(str(err))


def collections(index: IndexServer) -> dict[str, index_pb2.Collection]:
    """Every collection by name."""
    return {c.name: c for c in index.stub.ListCollections(index_pb2.ListCollectionsRequest(), timeout=10).collections}


def all_images(index: IndexServer, collection: str) -> list[index_pb2.ImageMeta]:
    """Every image of a collection, through ListImages."""
    out: list[index_pb2.ImageMeta] = []
    while page := index.stub.ListImages(index_pb2.ListImagesRequest(
            collection=collection, after_id=out[-1].id if out else 0, limit=100), timeout=10).images:
        out += page
    return out


@pytest.fixture
def new_model() -> Iterator[tuple[FakeEmbedder, str]]:
    """An embedder of model NEW (384 dimensions), 4 ms per image."""
    fake = FakeEmbedder(NEW, 384, delay_s=0.004)
    server, addr = serve(fake)
    yield fake, addr
    server.stop(0)


def test_reembed_under_searches_survives_sigkill_and_swaps_atomically(
        index: IndexServer, new_model: tuple[FakeEmbedder, str], tmp_path: Path) -> None:
    ids = load_old(index)
    _, addr = new_model
    args = ["reembed", "--to", "c2", "--embedder", addr, "--index", index.addr, "--batch-size", "8",
            "--progress-s", "0.5"]
    with Searcher(index, ids) as searcher:
        proc = loader_process(*args)
        try:
            deadline = time.monotonic() + 60
            while (c2 := collections(index).get("c2")) is None or c2.count < 40:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the re-embed made no progress"
                time.sleep(0.02)
        finally:
            kill(proc)
        partial = collections(index)
        assert 40 <= partial["c2"].count < N, "killed mid-way"
        assert list(partial["c1"].aliases) == ["default"], "searches still use the old collection"
        assert main([*args, "--drop-old"]) == EXIT_OK
        time.sleep(0.3)  # a few searches after the swap
    assert searcher.failures == [] and searcher.searches > 20
    assert searcher.seen == ["c1", "c2"], "one switch, never back: the alias moved atomically"
    after = collections(index)
    assert list(after) == ["c2"] and after["c2"].count == N and after["c2"].dim == 384
    images = all_images(index, "c2")
    assert sorted(m.id for m in images) == sorted(ids) and len({m.sha256 for m in images}) == N
    assert {m.model_id for m in images} == {NEW}
    # The new vectors are the new model's: an image's own vector finds it first.
    first = images[0]
    original = b"".join(c.data for c in index.stub.GetImage(index_pb2.GetImageRequest(id=first.id), timeout=10))
    hits = index.stub.Search(index_pb2.SearchRequest(
        vector=vector_of(original, 384, NEW).tolist(), k=1, model_id=NEW), timeout=10).hits
    assert hits[0].id == first.id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    media = [p for p in (tmp_path / "index-data" / "media").rglob("*") if p.is_file()]
    assert len([p for p in media if len(p.name) == 64]) == N, "originals are shared by sha256, never copied"
    assert len([p for p in media if p.name.endswith(".thumb")]) == N, "so are their thumbnails"


def test_refused_before_any_work(index: IndexServer, new_model: tuple[FakeEmbedder, str]) -> None:
    load_old(index, 8)
    fake, addr = new_model
    same = FakeEmbedder(OLD, 512)
    server, same_addr = serve(same)
    try:
        assert main(["reembed", "--to", "c2", "--embedder", same_addr, "--index", index.addr]) == EXIT_STOPPED
    finally:
        server.stop(0)
    for taken in ("c1", "default"):
        assert main(["reembed", "--to", taken, "--embedder", addr, "--index", index.addr]) == EXIT_STOPPED
    assert list(collections(index)) == ["c1"] and fake.embedded == 0 and same.embedded == 0


def test_adopted_rows_are_reembedded_from_their_files(index: IndexServer, new_model: tuple[FakeEmbedder, str],
                                                      tmp_path: Path) -> None:
    """Rows without a stored original (model `unknown`) are read from --prototype-root."""
    import psycopg2

    root = tmp_path / "proto"
    (root / "caltech").mkdir(parents=True)
    files = {f"{i}.jpg": os.urandom(500) for i in range(5)}
    for name, data in files.items():
        (root / "caltech" / name).write_bytes(data)
    with psycopg2.connect(index.dsn) as conn, conn.cursor() as cur:
        for name in files:
            vec = "[" + ",".join(["0.0441941738"] * 512) + "]"
            cur.execute("INSERT INTO images (v, original_ref, model_id, file_name) VALUES (%s, %s, 'unknown', %s)",
                        (vec, f"/home/proto/caltech/{name}", name))
    _, addr = new_model
    assert main(["reembed", "--to", "c2", "--embedder", addr, "--index", index.addr,
                 "--prototype-root", str(root)]) == EXIT_OK
    images = all_images(index, "c2")
    assert sorted(m.file_name for m in images) == sorted(files)
    assert {m.sha256 for m in images} == {hashlib.sha256(d).hexdigest() for d in files.values()}


@pytest.fixture(scope="module")
def siglip_embedder() -> Iterator[str]:
    """An in-process embedder serving a tiny random SigLIP bundle (64 dimensions, squash preprocessing)."""
    pytest.importorskip("torch", reason="building a family bundle needs the torch extra")
    from embedder_service.config import EmbedderConfig
    from embedder_service.engine import Engine
    from embedder_service.model import ClipModel
    from embedder_service.models import bundle, family_export
    from embedder_service.server import create_server

    cache = Path(__file__).resolve().parents[2] / ".cache" / "test-bundles"
    config = EmbedderConfig(port=0, max_wait_ms=2)
    model = ClipModel(bundle.load(family_export.cached_family_bundle(cache, "siglip")), "cpu")
    server = create_server(config, Engine(model, config))
    yield f"127.0.0.1:{server.port}"
    server.stop(0.5)


def test_reembed_between_two_real_random_models(index: IndexServer, embedder: str, siglip_embedder: str,
                                                tmp_path: Path) -> None:
    """Real embedders on both sides: the tiny CLIP (512-d) loads a folder, the tiny SigLIP (64-d) re-embeds it."""
    photos = tmp_path / "photos" / "beach"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(11)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    assert main(["dir", str(photos.parent), "--embedder", embedder, "--index", index.addr]) == EXIT_OK
    before = collections(index)["c1"]
    ids = [m.id for m in all_images(index, "c1")]
    assert before.dim == 512 and before.count == len(ids) > 5
    with Searcher(index, ids) as searcher:
        assert main(["reembed", "--to", "siglip", "--embedder", siglip_embedder, "--index", index.addr]) == EXIT_OK
        time.sleep(0.3)  # a few searches after the swap
    assert searcher.failures == [] and searcher.seen == ["c1", "siglip"]
    after = collections(index)
    assert after["siglip"].dim == 64 and after["siglip"].count == before.count
    assert list(after["siglip"].aliases) == ["default"] and list(after["c1"].aliases) == []
    images = all_images(index, "siglip")
    assert sorted(m.id for m in images) == sorted(ids) and len({m.model_id for m in images}) == 1
    assert images[0].model_id != all_images(index, "c1")[0].model_id
