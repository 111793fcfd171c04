"""The load pipeline: read and hash -> skip what the index has -> stream-embed -> batched upserts.

Three stages run at once, joined by bounded queues, so memory stays at a few batches whatever the
dataset size. Nothing is kept between runs: a rerun asks the index (Exists) what it already holds.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, TypeVar

import grpc
from PIL import Image

from loader import clients
from loader.clients import Backoff, LoadError, Model
from loader.config import LoaderConfig
from loader.report import Report, Summary
from loader.sources import Candidate, FileData, read
from loader.stream import DONE, Batch, EmbedStream
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc
from semsearch_common.enums import enum_word

log = logging.getLogger(__name__)
T = TypeVar("T")
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


def run(config: LoaderConfig, candidates: Callable[[], Iterable[Candidate]], report: Report) -> Summary:
    """Load every candidate; returns the summary, or raises LoadError when the run had to stop."""
    log.info("counting files")
    total = sum(1 for _ in candidates())  # a names-only walk: cheap next to embedding
    log.info("%d files to look at", total)
    report.found(total)
    if config.dry_run:
        for c in candidates():
            _validate(c, config, report)
        return report.finish()
    pipeline = Pipeline(config, report, expected_rows=total)
    try:
        pipeline.run(candidates())
    except LoadError as err:
        report.finish(stopped=str(err))
        raise
    except KeyboardInterrupt:
        pipeline.stop.set()
        report.finish(stopped="interrupted")
        raise
    return report.finish()


def _validate(c: Candidate, config: LoaderConfig, report: Report) -> None:
    """Dry run: read and fully decode the file locally, as the embedder would."""
    if c.skip:
        return report.skipped(c.rel, c.skip)
    try:
        got = read(c, config.max_file_bytes)
        if isinstance(got, str):
            return report.skipped(c.rel, got)
        with Image.open(io.BytesIO(got.data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return report.failed(c.rel, f"cannot decode: {err}")
    report.loaded()


class Pipeline:
    """One run's threads, queues and connections."""

    def __init__(self, config: LoaderConfig, report: Report, expected_rows: int = 0) -> None:
        self.config, self.report = config, report
        # Told to the index with every upsert: a large load into an empty collection defers its index.
        self.expected_rows = expected_rows
        self.stop = threading.Event()
        self.error: LoadError | None = None
        self.embed_q: queue.Queue[Any] = queue.Queue(config.in_flight)
        self.upsert_q: queue.Queue[Any] = queue.Queue(config.in_flight)
        self._embedder_channel = clients.channel(config.embedder_addr)
        self._index_channel = clients.channel(config.index_addr)
        self.embedder = embedder_pb2_grpc.EmbedderStub(self._embedder_channel)
        self.index = index_pb2_grpc.IndexStub(self._index_channel)
        self.model = Model("", 0)

    def run(self, candidates: Iterable[Candidate]) -> None:
        """Check the services, run the stages to the end, raise the first fatal error."""
        try:
            self.model = clients.preflight(self.embedder, self.index, self.config.timeout_s, self._backoff(),
                                           self.config.batch_size, self.config.collection)
            threads = [threading.Thread(target=self._guard, args=(self._read, candidates), name="loader-read"),
                       threading.Thread(target=self._guard, args=(self._embed,), name="loader-embed")]
            threads += [threading.Thread(target=self._guard, args=(self._upsert,), name=f"loader-upsert-{i}")
                        for i in range(self.config.upsert_workers)]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # a short join keeps Ctrl-C responsive
            if self.error:
                raise self.error
            if self._should_build():
                self._build_index()
        finally:
            self.stop.set()
            self._embedder_channel.close()
            self._index_channel.close()

    def _guard(self, stage: Callable[..., None], *args: Any) -> None:
        try:
            stage(*args)
        except LoadError as err:
            if self.error is None and not self.stop.is_set():
                self.error = err
            self.stop.set()
        except Exception as err:  # a bug: stop everything rather than hang
            log.exception("loader stage %s crashed", threading.current_thread().name)
            if self.error is None:
                self.error = LoadError(f"internal error: {err!r}")
            self.stop.set()

    def _backoff(self) -> Backoff:
        return Backoff(self.config.retry_s, self.stop)

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while not self.stop.is_set():
            try:
                return q.put(item, timeout=0.2)
            except queue.Full:
                continue
        raise LoadError("stopped")

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                continue
        raise LoadError("stopped")

    # -- stage 1: read, hash, ask the index -------------------------------------------------------

    def _read(self, candidates: Iterable[Candidate]) -> None:
        backoff = self._backoff()
        for batch in self._batches(candidates):
            self._put(self.embed_q, self._missing(batch, backoff))
        self._put(self.embed_q, DONE)

    def _batches(self, candidates: Iterable[Candidate]) -> Iterator[Batch]:
        batch: Batch = []
        size = 0
        for c in candidates:
            if self.stop.is_set():
                raise LoadError("stopped")
            if c.skip:
                self.report.skipped(c.rel, c.skip)
                continue
            try:
                got = read(c, self.config.max_file_bytes)
            except OSError as err:
                self.report.failed(c.rel, f"cannot read: {err.strerror or err}")
                continue
            if isinstance(got, str):
                self.report.skipped(c.rel, got)
                continue
            if batch and (len(batch) >= self.config.batch_size or size + len(got.data) > self.config.max_batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(got)
            size += len(got.data)
        if batch:
            yield batch

    def _missing(self, batch: Batch, backoff: Backoff) -> Batch:
        """The files of the batch whose content the index does not hold yet (first copy of each)."""
        unique: dict[str, FileData] = {}
        for f in batch:
            unique.setdefault(f.sha256, f)
        request = index_pb2.ExistsRequest(sha256=list(unique), collection=self.config.collection)
        reply = clients.call(lambda: self.index.Exists(request, timeout=self.config.timeout_s),
                             "index Exists", backoff)
        present = set(reply.present)
        missing = [f for sha, f in unique.items() if sha not in present]
        self.report.present(len(batch) - len(missing))
        return missing

    # -- stage 2: one embedding stream, reopened after a failure ----------------------------------

    def _embed(self) -> None:
        stream = EmbedStream(self)
        backoff = self._backoff()
        while not stream.finished():
            try:
                stream.run(backoff)
            except grpc.RpcError as err:
                code = grpc.StatusCode.DEADLINE_EXCEEDED if stream.timed_out else err.code()
                if code not in clients.RETRYABLE:
                    raise LoadError(f"embedder StreamEmbedImages: {clients.describe(err)}") from None
                backoff.wait(f"embedder StreamEmbedImages: {code.name}: {err.details()}")
        for _ in range(self.config.upsert_workers):
            self._put(self.upsert_q, DONE)

    def embedded(self, batch: Batch, response: embedder_pb2.EmbedImagesResponse) -> None:
        """Turn one stream answer into upsert items; a failed image fails alone."""
        if response.model_id != self.model.model_id:
            raise LoadError(f"the embedder now serves {response.model_id}, but this run started with "
                            f"{self.model.model_id}; rerun to load with one model")
        results = {r.key: r for r in response.results}
        items = []
        for i, f in enumerate(batch):
            r = results.get(str(i))
            if r is None:
                self.report.failed(f.candidate.rel, "embedder: no result for this image")
            elif r.HasField("error") and r.error.code:
                self.report.failed(f.candidate.rel, f"embedder: {r.error.message}")
            else:
                items.append((f, index_pb2.UpsertItem(
                    sha256=f.sha256, original=f.data, content_type=r.content_type, thumbnail=r.thumbnail,
                    width=r.width, height=r.height, label=f.candidate.label, source=self.config.source,
                    file_name=f.candidate.rel, embedding=r.embedding, model_id=response.model_id,
                    facts=r.facts, file_mtime_ns=f.candidate.mtime_ns or f.mtime_ns,
                    record_file=self.config.record_files)))
        if items:
            self._put(self.upsert_q, items)

    # -- stage 3: batched upserts -----------------------------------------------------------------

    def _upsert(self) -> None:
        backoff = self._backoff()
        while (pairs := self._get(self.upsert_q)) is not DONE:
            request = index_pb2.UpsertRequest(items=[item for _, item in pairs], collection=self.config.collection,
                                              expected_rows=self.expected_rows)
            reply = clients.call(partial(self.index.Upsert, request, timeout=self.config.timeout_s),
                                 "index Upsert", backoff)
            created = existing = 0
            for (f, _), result in zip(pairs, reply.results, strict=True):
                if result.HasField("error") and result.error.code:
                    if result.error.code == FAILED_PRECONDITION:
                        raise LoadError(f"index refused {f.candidate.rel}: {result.error.message}")
                    self.report.failed(f.candidate.rel, f"index: {result.error.message}")
                elif result.created:
                    created += 1
                else:
                    existing += 1  # another loader (or a copy in this run) stored it first
            self.report.loaded(created)
            self.report.present(existing)

    def _should_build(self) -> bool:
        """--build-index, or by default when an unsharded run stored images (the index may have deferred it)."""
        if self.config.build_index is not None:
            return self.config.build_index
        return self.config.shard.count == 1 and self.report.summary.loaded > 0

    def _build_index(self) -> None:
        log.info("building the approximate index")
        request = index_pb2.BuildIndexRequest(collection=self.config.collection)
        reply = clients.call(lambda: self.index.BuildIndex(request, timeout=3600), "index BuildIndex", self._backoff())
        log.info("index %s (%.1f s)", enum_word(index_pb2.IndexState, reply.index_state), reply.build_seconds)
