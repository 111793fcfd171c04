"""Dynamic batching: items from concurrent requests are coalesced into one inference call."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from semsearch_common.errors import Reason, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Overloaded(ResourceExhausted):
    """The queue is full; the caller should back off and retry."""

    reason = Reason.OVERLOADED


class Closed(Unavailable):
    """The batcher has been stopped."""

    reason = Reason.SHUTTING_DOWN


class Batcher(Generic[Item, Result]):
    """Runs `run_batch` on up to `max_batch` queued items at a time, on its own thread.

    A batch starts as soon as it is full, or `max_wait_s` after its oldest item arrived. The wait is only
    for company that is likely to come: after a batch of one item (a single client, or the first request
    after a pause) what is queued runs at once, so one request at a time never waits for nothing;
    under concurrency items pile up while a batch runs, the batches grow, and the wait applies again.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch: int,
        max_wait_s: float,
        queue_limit: int,
        name: str,
        on_batch: Callable[[int, float, float], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue_limit = queue_limit
        self._on_batch = on_batch
        self._queue: deque[tuple[Item, Future[Result], float]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._last_size = 1  # items in the last batch: more than one means concurrent callers
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[Item], timeout: float | None = 0.0) -> list[Future[Result]]:
        """Queue items; wait up to `timeout` seconds for room (None = forever), else raise Overloaded."""
        if len(items) > self._queue_limit:
            # Waiting cannot help these: the reason tells the caller to split, not to retry.
            raise Overloaded(f"{len(items)} items exceed the queue limit of {self._queue_limit}",
                             reason=Reason.TOO_LARGE)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._queue) + len(items) > self._queue_limit and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Overloaded(f"inference queue is full ({self._queue_limit} items waiting)")
                self._cond.wait(left)
            if self._closed:
                raise Closed("the model is shutting down")
            now = time.monotonic()
            futures: list[Future[Result]] = [Future() for _ in items]
            self._queue.extend((item, fut, now) for item, fut in zip(items, futures, strict=True))
            self._cond.notify_all()
        return futures

    def close(self) -> None:
        """Stop taking work, fail what is queued, and end the thread."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for _, fut, _ in pending:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(Closed("the model is shutting down"))
        self._thread.join(timeout=10)

    def _take(self) -> list[tuple[Item, Future[Result], float]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            oldest = self._queue[0][2]
            while self._last_size > 1 and len(self._queue) < self._max_batch and not self._closed:
                left = oldest + self._max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            self._last_size = len(taken)
            self._cond.notify_all()  # room for blocked submitters
        # Items whose caller gave up (cancelled futures) are dropped before inference.
        return [entry for entry in taken if entry[1].set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            started = time.monotonic()
            try:
                results = self._run_batch([item for item, _, _ in batch])
            except Exception as exc:  # every waiter must hear about the failure
                log.exception("batch of %d failed", len(batch))
                for _, fut, _ in batch:
                    fut.set_exception(exc)
                continue
            for (_, fut, _), result in zip(batch, results, strict=True):
                fut.set_result(result)
            if self._on_batch is not None:
                waited = started - min(enqueued for _, _, enqueued in batch)
                self._on_batch(len(batch), waited, time.monotonic() - started)
