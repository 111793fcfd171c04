"""`python -m loader reembed`: a new collection for the embedder's model, built from the stored originals.

Searches keep using the old collection (through its alias) until the end, when the alias moves in one
transaction. Resumable: each page comes from ListImages with only what the new collection lacks, with
its originals and thumbnails (one call per batch). Three stages overlap so the embedder never waits:
reading pages, embedding (several requests in flight), upserting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from loader.clients import Backoff, LoadError, call, channel, images_per_request
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc

log = logging.getLogger(__name__)
DONE: Any = object()
THUMBNAIL_SIZE = 256  # the loader's default


@dataclass(frozen=True)
class ReembedConfig:
    """What a re-embed run needs."""

    index_addr: str
    embedder_addr: str
    target: str  # the new collection's name
    source: str = "default"  # the collection or alias to read
    alias: str = "default"  # the alias to move at the end ("" to move none)
    drop_old: bool = False
    batch_size: int = 64
    embed_workers: int = 2  # requests in flight at the embedder: it never waits for a round trip
    upsert_workers: int = 3  # concurrent upserts: HNSW inserts into the new collection take their time
    timeout_s: float = 60.0
    retry_s: float = 60.0
    prototype_root: Path | None = None  # where adopted rows' original_ref paths resolve (their files)
    progress_s: float = 10.0


@dataclass
class Outcome:
    """What a run did."""

    source: str
    target: str
    total: int = 0
    embedded: int = 0
    present: int = 0
    failed: int = 0
    seconds: float = 0.0
    swapped: bool = False
    dropped: bool = False

    @property
    def rate(self) -> float:
        """Images embedded per second."""
        return self.embedded / self.seconds if self.seconds else 0.0


def _collection(stub: index_pb2_grpc.IndexStub, name: str, cfg: ReembedConfig,
                backoff: Backoff) -> index_pb2.Collection | None:
    listed = call(lambda: stub.ListCollections(index_pb2.ListCollectionsRequest(), timeout=cfg.timeout_s),
                  "index ListCollections", backoff)
    found: list[index_pb2.Collection] = [c for c in listed.collections if c.name == name or name in c.aliases]
    return found[0] if found else None


def prepare(cfg: ReembedConfig, index: index_pb2_grpc.IndexStub, embedder: embedder_pb2_grpc.EmbedderStub,
            backoff: Backoff) -> tuple[index_pb2.Collection, embedder_pb2.ModelInfo]:
    """Check everything before any work; create the target (or find a killed run's to resume)."""
    info = call(lambda: embedder.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=cfg.timeout_s),
                "embedder GetModelInfo", backoff)
    source = _collection(index, cfg.source, cfg, backoff)
    if source is None:
        raise LoadError(f"no collection or alias named {cfg.source!r} to re-embed")
    if source.model_id == info.model_id:
        raise LoadError(f"collection {source.name!r} already holds {info.model_id}: nothing to re-embed")
    target = _collection(index, cfg.target, cfg, backoff)
    if target is not None:
        # Only a killed run's own leftover is resumed: same model and shape, no alias on it yet.
        if target.name != cfg.target or target.aliases or target.model_id != info.model_id or target.dim != info.dim:
            raise LoadError(f"the name {cfg.target!r} is in use (collection {target.name!r}, model "
                            f"{target.model_id or 'none'}, aliases {', '.join(target.aliases) or 'none'}); "
                            "choose another --to")
        log.info("resuming into %s (%d images so far)", target.name, target.count)
        return source, info
    try:
        index.CreateCollection(index_pb2.CreateCollectionRequest(
            name=cfg.target, model_id=info.model_id, dim=info.dim), timeout=cfg.timeout_s)
    except grpc.RpcError as err:
        raise LoadError(f"index CreateCollection: {err.code().name}: {err.details()}") from None
    return source, info


class Reembed:
    """One run: pages of the source, originals read in parallel, embedded, upserted into the target."""

    def __init__(self, cfg: ReembedConfig) -> None:
        self.cfg = cfg
        self.index = index_pb2_grpc.IndexStub(channel(cfg.index_addr))
        self.embedder = embedder_pb2_grpc.EmbedderStub(channel(cfg.embedder_addr))
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def backoff(self) -> Backoff:
        """The shared retry policy, bounded by --retry-s."""
        return Backoff(self.cfg.retry_s, self.stop)

    def run(self) -> Outcome:
        """Re-embed, move the alias, drop the old collection if asked."""
        source, info = prepare(self.cfg, self.index, self.embedder, self.backoff())
        self.model_id = info.model_id
        out = Outcome(source.name, self.cfg.target, total=source.count)
        self.out, started = out, time.monotonic()
        batch = min(self.cfg.batch_size, images_per_request(info))
        embed_q: queue.Queue[Any] = queue.Queue(maxsize=4)
        upsert_q: queue.Queue[Any] = queue.Queue(maxsize=4)
        embedders = [threading.Thread(target=self._guard, args=(self._embed, embed_q, upsert_q))
                     for _ in range(self.cfg.embed_workers)]
        upserters = [threading.Thread(target=self._guard, args=(self._upsert, upsert_q))
                     for _ in range(self.cfg.upsert_workers)]

        def close_upserts() -> None:
            for t in embedders:
                t.join()
            for _ in upserters:
                self._put(upsert_q, DONE)

        stages = [threading.Thread(target=self._guard, args=(self._read, source.name, batch, embed_q)),
                  *embedders, threading.Thread(target=close_upserts), *upserters]
        for t in stages:
            t.start()
        last = time.monotonic()
        while any(t.is_alive() for t in stages):
            stages[-1].join(timeout=0.5)
            if time.monotonic() - last >= self.cfg.progress_s:
                last = time.monotonic()
                log.info("re-embed %s -> %s: %d/%d done (%d new, %d were there, %d failed), %.1f images/s",
                         source.name, out.target, out.embedded + out.present + out.failed, out.total,
                         out.embedded, out.present, out.failed, out.embedded / max(1e-9, last - started))
        out.seconds = time.monotonic() - started
        if self.error is not None:
            raise self.error
        if out.failed:
            raise LoadError(f"{out.failed} image(s) failed; the alias was not moved (rerun to retry them)")
        self._finish(source, out)
        return out

    def _finish(self, source: index_pb2.Collection, out: Outcome) -> None:
        t = self.cfg.timeout_s
        if self.cfg.alias:
            self.index.SetAlias(index_pb2.SetAliasRequest(alias=self.cfg.alias, collection=out.target,
                                                          expected_collection=source.name), timeout=t)
            out.swapped = True
            log.info("alias %s now points at %s (was %s)", self.cfg.alias, out.target, source.name)
        if self.cfg.drop_old:
            self.index.DropCollection(index_pb2.DropCollectionRequest(name=source.name), timeout=t)
            out.dropped = True
            log.info("dropped collection %s", source.name)

    def _add(self, counter: str, n: int) -> None:
        with self._lock:  # several stages count failures
            setattr(self.out, counter, getattr(self.out, counter) + n)

    def _guard(self, stage: Any, *args: Any) -> None:
        try:
            stage(*args)
        except BaseException as err:  # one failed stage stops the others; run() re-raises it
            if self.error is None:
                self.error = err
            self.stop.set()

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                continue
        return DONE

    # -- stage 1: pages of the source the target lacks, with their bytes, in one call each ---------

    def _read(self, source: str, batch: int, embed_q: queue.Queue[Any]) -> None:
        after, t, backoff = 0, self.cfg.timeout_s, self.backoff()
        while not self.stop.is_set():
            request = index_pb2.ListImagesRequest(collection=source, after_id=after, limit=batch,
                                                  missing_from=self.cfg.target, include_bytes=True)
            page = call(partial(self.index.ListImages, request, timeout=t), "index ListImages", backoff)
            if not page.last_id:
                break
            after = page.last_id
            ready = []
            for meta, original, thumbnail in zip(page.images, page.originals, page.thumbnails, strict=True):
                data = original if meta.sha256 else self._prototype_file(meta)
                if data:
                    ready.append((meta, data, thumbnail))
                else:
                    log.warning("image %d: no original to re-embed (%s)", meta.id, meta.original_ref or meta.sha256)
            self._add("failed", len(page.images) - len(ready))
            self._add("present", page.left_out)
            if ready:
                self._put(embed_q, ready)
        for _ in range(self.cfg.embed_workers):
            self._put(embed_q, DONE)

    def _prototype_file(self, meta: index_pb2.ImageMeta) -> bytes:
        root = self.cfg.prototype_root
        if root is None:
            log.warning("image %d came from the prototype (%s): give --prototype-root to re-embed it from its "
                        "file", meta.id, meta.original_ref)
            return b""
        # The prototype stored absolute paths of its machine: try the path under the root, then shorter tails.
        parts = Path(meta.original_ref.replace("\\", "/")).parts
        for start in range(len(parts)):
            candidate = root.joinpath(*[p for p in parts[start:] if p not in ("/", "")])
            if candidate.is_file():
                return candidate.read_bytes()
        log.warning("image %d: %s not found under %s", meta.id, meta.original_ref, root)
        return b""

    # -- stage 2 and 3: embed, upsert ---------------------------------------------------------------

    def _embed(self, embed_q: queue.Queue[Any], upsert_q: queue.Queue[Any]) -> None:
        backoff = self.backoff()
        while (batch := self._get(embed_q)) is not DONE:
            # Thumbnails only for rows that have none (adopted ones): the stored ones are kept.
            request = embedder_pb2.EmbedImagesRequest(images=[
                embedder_pb2.ImageInput(data=data, key=str(i)) for i, (_, data, _) in enumerate(batch)],
                thumbnail_size=THUMBNAIL_SIZE if any(not thumb for _, _, thumb in batch) else 0)
            response: embedder_pb2.EmbedImagesResponse = call(
                partial(self.embedder.EmbedImages, request, timeout=self.cfg.timeout_s), "embedder EmbedImages",
                backoff)
            if response.model_id != self.model_id:
                raise LoadError(f"the embedder now serves {response.model_id}, not {self.model_id}")
            results = {r.key: r for r in response.results}
            items = []
            for i, (meta, data, thumb) in enumerate(batch):
                r = results.get(str(i))
                if r is None or (r.HasField("error") and r.error.code):
                    log.warning("image %d: embedder: %s", meta.id, r.error.message if r else "no result")
                    self._add("failed", 1)
                    continue
                # The stored facts of the original stay; adopted rows never had them.
                items.append(index_pb2.UpsertItem(
                    sha256=meta.sha256 or _sha256(data), original=data,
                    content_type=meta.content_type or r.content_type, thumbnail=thumb or r.thumbnail,
                    width=meta.width or r.width, height=meta.height or r.height, label=meta.label, source=meta.source,
                    file_name=meta.file_name, embedding=r.embedding, model_id=response.model_id))
            if items:
                self._put(upsert_q, items)

    def _upsert(self, upsert_q: queue.Queue[Any]) -> None:
        backoff = self.backoff()
        while (items := self._get(upsert_q)) is not DONE:
            request = index_pb2.UpsertRequest(items=items, collection=self.cfg.target)
            response: index_pb2.UpsertResponse = call(
                partial(self.index.Upsert, request, timeout=self.cfg.timeout_s), "index Upsert", backoff)
            self._count(response)

    def _count(self, response: index_pb2.UpsertResponse) -> None:
        for r in response.results:
            if r.HasField("error") and r.error.code:
                log.warning("%s: index: %s", r.sha256, r.error.message)
                self._add("failed", 1)
            else:
                self._add("embedded", 1)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
