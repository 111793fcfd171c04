"""The embedding stage's stream: one StreamEmbedImages call fed from the pipeline's queue, reopened by it."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from loader.clients import Backoff, LoadError
from loader.sources import FileData
from protos.semsearch.v1 import embedder_pb2

if TYPE_CHECKING:
    from loader.pipeline import Pipeline

log = logging.getLogger(__name__)
Batch = list[FileData]
DONE: Any = object()  # end-of-input marker in the queues


class EmbedStream:
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
                    self.p.embedded(batch, response)
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
