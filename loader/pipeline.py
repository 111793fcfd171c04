"""The load pipeline: read and hash -> skip what the index has -> stream-embed -> batched upserts.

Three stages run at once, joined by bounded queues, so memory stays at a few batches whatever the
dataset size. Nothing is kept between runs: a rerun asks the index (Exists) what it already holds.
"""

from __future__ import annotations

import io
import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc
from PIL import Image

from loader import clients
from loader.clients import Backoff, LoadError, Model
from loader.config import LoaderConfig
from loader.report import Report, Summary
from loader.sources import Candidate, FileData, read
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2, index_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")
Batch = list[FileData]
DONE: Any = object()  # end-of-input marker in the queues
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
    pipeline = Pipeline(config, report)
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

    def __init__(self, config: LoaderConfig, report: Report) -> None:
        self.config, self.report = config, report
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
                                           self.config.batch_size)
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
            if self.config.build_index:
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
        request = index_pb2.ExistsRequest(sha256=list(unique))
        reply = clients.call(lambda: self.index.Exists(request, timeout=self.config.timeout_s),
                             "index Exists", backoff)
        present = set(reply.present)
        missing = [f for sha, f in unique.items() if sha not in present]
        self.report.present(len(batch) - len(missing))
        return missing

    # -- stage 2: one embedding stream, reopened after a failure ----------------------------------

    def _embed(self) -> None:
        stream = _Stream(self)
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

    def _embedded(self, batch: Batch, response: embedder_pb2.EmbedImagesResponse) -> None:
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
                    file_name=f.candidate.rel, embedding=r.embedding, model_id=response.model_id)))
        if items:
            self._put(self.upsert_q, items)

    # -- stage 3: batched upserts -----------------------------------------------------------------

    def _upsert(self) -> None:
        backoff = self._backoff()
        while (pairs := self._get(self.upsert_q)) is not DONE:
            request = index_pb2.UpsertRequest(items=[item for _, item in pairs])
            reply = clients.call(lambda r=request: self.index.Upsert(r, timeout=self.config.timeout_s),
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

    def _build_index(self) -> None:
        log.info("building the approximate index")
        reply = clients.call(lambda: self.index.BuildIndex(index_pb2.BuildIndexRequest(), timeout=3600),
                             "index BuildIndex", self._backoff())
        log.info("index %s (%.1f s)", reply.index_state, reply.build_seconds)


class _Stream:
    """StreamEmbedImages with at most in_flight unanswered requests; what a broken stream owed is resent."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.p = pipeline
        self.resend: deque[Batch] = deque()
        self.input_done = False
        self.timed_out = False
        self._handing_off = False
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def finished(self) -> bool:
        """Whether every batch was answered."""
        return self.input_done and not self.resend

    def run(self, backoff: Backoff) -> None:
        """One stream: send batches, hand answers on; raises grpc.RpcError when the stream breaks."""
        pending: OrderedDict[str, Batch] = OrderedDict()
        slots = threading.Semaphore(self.p.config.in_flight)
        closed = threading.Event()
        self.timed_out = False
        self._handing_off = False
        last_progress = [time.monotonic()]
        # Every call carries a deadline; a long load rotates streams well before theirs runs out
        # (requests stop at 3/4 of it, the answers drain, and the next stream takes over).
        deadline_s = max(600.0, 10 * self.p.config.timeout_s)
        rotate_at = time.monotonic() + 0.75 * deadline_s

        def requests() -> Iterator[embedder_pb2.EmbedImagesRequest]:
            while not closed.is_set() and not self.p.stop.is_set() and time.monotonic() < rotate_at:
                if not slots.acquire(timeout=0.2):
                    continue
                batch = self._next()
                with self._lock:
                    if batch is None or closed.is_set():
                        if batch is not None:
                            self.resend.appendleft(batch)
                        slots.release()
                        if self.input_done and batch is None:
                            return
                        continue
                    rid = f"b{next(self._ids)}"
                    if not pending:
                        last_progress[0] = time.monotonic()
                    pending[rid] = batch
                yield embedder_pb2.EmbedImagesRequest(
                    images=[embedder_pb2.ImageInput(data=f.data, key=str(i)) for i, f in enumerate(batch)],
                    thumbnail_size=self.p.config.thumbnail_size, request_id=rid)

        responses = self.p.embedder.StreamEmbedImages(requests(), timeout=deadline_s)
        watchdog = threading.Thread(target=self._watch, args=(responses, pending, closed, last_progress),
                                    daemon=True, name="loader-stream-watchdog")
        watchdog.start()
        try:
            for response in responses:
                with self._lock:
                    batch = pending.pop(response.request_id, None)
                    last_progress[0] = time.monotonic()
                if batch is None:
                    continue  # an answer to a request this stream did not send: ignore it
                slots.release()
                backoff.reset()
                # Waiting for room in the upsert queue is back-pressure, not a silent embedder.
                self._handing_off = True
                try:
                    self.p._embedded(batch, response)
                finally:
                    with self._lock:
                        self._handing_off = False
                        last_progress[0] = time.monotonic()
        finally:
            with self._lock:
                closed.set()
                # Unanswered batches go back to the front, in their order, for the next stream.
                self.resend.extendleft(reversed(pending.values()))
                pending.clear()
            responses.cancel()
        if self.p.stop.is_set():
            raise LoadError("stopped")

    def _next(self) -> Batch | None:
        with self._lock:
            if self.resend:
                return self.resend.popleft()
        if self.input_done:
            return None
        try:
            batch = self.p.embed_q.get(timeout=0.2)
        except queue.Empty:
            return None
        if batch is DONE:
            self.input_done = True
            return None
        return batch or None  # a batch the index already held entirely

    def _watch(self, responses: Any, pending: OrderedDict[str, Batch], closed: threading.Event,
               last_progress: list[float]) -> None:
        """Cancel the stream when requests wait longer than the timeout for an answer (a hung peer)."""
        while not closed.wait(0.5):
            with self._lock:
                stalled = (bool(pending) and not self._handing_off
                           and time.monotonic() - last_progress[0] > self.p.config.timeout_s)
            if stalled:
                log.warning("no answer from the embedder for %.0f s", self.p.config.timeout_s)
                self.timed_out = True
                responses.cancel()
                return
