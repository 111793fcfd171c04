"""The embedding work behind the RPCs: decode, tokenize, batch, infer. No transport here."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from embedder_service import metrics
from embedder_service.batching import Batcher
from embedder_service.config import EmbedderConfig
from embedder_service.model import ClipModel
from embedder_service.preprocess import Decoded, ImageError, decode, spec_of
from embedder_service.tokenizer import TextTokenizer
from semsearch_common import errors
from semsearch_common.exif import Facts

log = logging.getLogger(__name__)

Outcome = TypeVar("Outcome")


class TextError(errors.InvalidArgument, ValueError):
    """A text that cannot be embedded (empty, too long); the message is user-facing."""


class DeadlineExceeded(errors.DeadlineExceeded, TimeoutError):
    """The caller's deadline passed before the work was done."""


@dataclass(frozen=True)
class ImageResult:
    """One embedded image, with what the decode learned about it."""

    embedding: NDArray[np.float32]
    width: int
    height: int
    content_type: str
    thumbnail: bytes | None
    facts: Facts = field(default_factory=Facts)  # what the file's EXIF says (capture time, camera, place)


@dataclass(frozen=True)
class TextResult:
    """One embedded text."""

    embedding: NDArray[np.float32]
    token_count: int
    truncated: bool


class Engine:
    """Owns the model, the decode pool and one batcher per tower."""

    def __init__(self, model: ClipModel, config: EmbedderConfig) -> None:
        b = model.bundle
        self.model = model
        self.config = config
        self.tokenizer = TextTokenizer.of(b)
        self.spec = spec_of(b.image, max_pixels=config.max_pixels, max_bytes=config.max_image_bytes,
                            draft=config.jpeg_draft)
        workers = config.decode_workers or os.cpu_count() or 1
        self._decoders = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        max_wait_s = config.max_wait_ms / 1000
        self.images: Batcher[NDArray[np.float32], NDArray[np.float32]] = Batcher(
            self._run_images, max_batch=config.max_batch, max_wait_s=max_wait_s, queue_limit=config.queue_limit,
            name="image", on_batch=metrics.batch_observer("image"))
        self.texts: Batcher[list[int], NDArray[np.float32]] = Batcher(
            self._run_texts, max_batch=config.max_batch, max_wait_s=max_wait_s, queue_limit=config.queue_limit,
            name="text", on_batch=metrics.batch_observer("text"))

    def close(self) -> None:
        """Fail queued work and stop the threads."""
        self.images.close()
        self.texts.close()
        self._decoders.shutdown(wait=False, cancel_futures=True)

    def embed_images(
        self, datas: Sequence[bytes], thumbnail_size: int = 0, timeout: float | None = None,
        wait_for_room: bool = False,
    ) -> list[ImageResult | ImageError]:
        """Embed encoded images; a bad one becomes an ImageError in its slot.

        Decoding runs on the pool and each image enters the batcher as soon as it is decoded,
        so inference overlaps decoding. With wait_for_room a full queue blocks (back-pressure)
        instead of raising Overloaded.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        decodes = {self._decoders.submit(self._decode, d, thumbnail_size): i for i, d in enumerate(datas)}
        out: list[ImageResult | ImageError | None] = [None] * len(datas)
        decoded: dict[int, Decoded] = {}
        pending: dict[int, Future[NDArray[np.float32]]] = {}
        try:
            for fut in as_completed(decodes, timeout=_left(deadline)):
                i = decodes[fut]
                try:
                    decoded[i] = fut.result()
                except ImageError as exc:
                    out[i] = exc
                    continue
                room = _left(deadline) if wait_for_room else 0.0
                pending[i] = self.images.submit([decoded[i].pixels], timeout=room)[0]
            for i, inferred in pending.items():
                d = decoded[i]
                out[i] = ImageResult(inferred.result(timeout=_left(deadline)), d.width, d.height,
                                     d.content_type, d.thumbnail, d.facts)
        except FutureTimeout:
            raise DeadlineExceeded("deadline passed while embedding images") from None
        finally:
            started: list[Future[Any]] = [*decodes, *pending.values()]
            for task in started:
                task.cancel()
        for r in out:
            metrics.ITEMS.labels("image", "error" if isinstance(r, ImageError) else "ok").inc()
        return _filled(out)

    def embed_texts(self, texts: Sequence[str], timeout: float | None = None) -> list[TextResult | TextError]:
        """Embed strings; an empty or over-long one becomes a TextError in its slot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[TextResult | TextError | None] = [None] * len(texts)
        rows: dict[int, tuple[list[int], bool]] = {}
        started = time.perf_counter()
        for i, text in enumerate(texts):
            if not text.strip():
                out[i] = TextError("text is empty")
            elif len(text) > self.config.max_text_chars:
                out[i] = TextError(f"text is longer than {self.config.max_text_chars} characters")
            else:
                rows[i] = self.tokenizer.tokenize(text)
        if rows:
            metrics.STAGE_SECONDS.labels("tokenize").observe((time.perf_counter() - started) / len(rows))
        futures = self.texts.submit([ids for ids, _ in rows.values()])
        try:
            for (i, (ids, truncated)), fut in zip(rows.items(), futures, strict=True):
                out[i] = TextResult(fut.result(timeout=_left(deadline)), len(ids), truncated)
        except FutureTimeout:
            raise DeadlineExceeded("deadline passed while embedding texts") from None
        finally:
            for fut in futures:
                fut.cancel()
        for r in out:
            metrics.ITEMS.labels("text", "error" if isinstance(r, TextError) else "ok").inc()
        return _filled(out)

    def _decode(self, data: bytes, thumbnail_size: int) -> Decoded:
        started = time.perf_counter()
        try:
            return decode(data, self.spec, thumbnail_size)
        finally:
            metrics.STAGE_SECONDS.labels("decode").observe(time.perf_counter() - started)

    def _run_images(self, pixels: list[NDArray[np.float32]]) -> list[NDArray[np.float32]]:
        return list(self.model.embed_pixels(np.stack(pixels)))

    def _run_texts(self, rows: list[list[int]]) -> list[NDArray[np.float32]]:
        # Padded as the bundle says: to the longest row of this batch where the tower allows it, so short
        # queries do not pay for 77 tokens.
        ids, mask = self.tokenizer.pad(rows)
        return list(self.model.embed_tokens(ids, mask))


def _filled(slots: list[Outcome | None]) -> list[Outcome]:
    """The slots of a request once every one holds its result or error."""
    filled = [slot for slot in slots if slot is not None]
    if len(filled) != len(slots):
        raise RuntimeError("an item of the request got neither a result nor an error")  # a bug, not bad input
    return filled


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
