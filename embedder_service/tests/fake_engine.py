"""A fake of the engine behind EmbedderServicer (server.EngineLike): no model, no torch, answers in microseconds."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embedder_service.engine import DeadlineExceeded, ImageResult, TextError, TextResult
from embedder_service.models.bundle import Bundle, ImageSpec
from embedder_service.preprocess import ImageError
from semsearch_common.errors import ServiceError
from semsearch_common.exif import Facts

DIM = 8


@dataclass
class FakeModel:
    """A bundle's description and a provider list, as ClipModel has them."""

    bundle: Bundle = field(default_factory=lambda: Bundle(name="fake", source="test", dim=DIM,
                                                          image=ImageSpec(size=16), version="1", semantic=False))
    providers: list[str] = field(default_factory=lambda: ["FakeExecutionProvider"])


def vector(seed: int) -> np.ndarray:
    """A unit vector that depends on `seed`."""
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEngine:
    """Embeds by content length; data starting with b"bad" is a bad image. Records every call.

    `fail` makes the next calls raise that error; `hold()` makes calls wait until `release()` (or their
    deadline, which then raises DeadlineExceeded as the real engine does).
    """

    def __init__(self) -> None:
        self.model = FakeModel()
        self.fail: ServiceError | None = None
        self.facts = Facts()  # what every good image "says" about itself
        self.calls: list[tuple[str, int, float | None, bool]] = []  # (what, items, timeout, wait_for_room)
        self.closed = False
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.entered = threading.Semaphore(0)

    def hold(self) -> None:
        """Make calls wait until release()."""
        self._open.clear()

    def release(self) -> None:
        """Let held calls finish."""
        self._open.set()

    def embed_images(self, datas: Sequence[bytes], thumbnail_size: int = 0, timeout: float | None = None,
                     wait_for_room: bool = False) -> list[ImageResult | ImageError]:
        """One result per image, in order."""
        self._enter("images", len(datas), timeout, wait_for_room)
        try:
            return [ImageError("not an image") if d.startswith(b"bad") else
                    ImageResult(vector(len(d)), 32, 24, "image/jpeg", b"thumb" if thumbnail_size else None,
                                self.facts)
                    for d in datas]
        finally:
            self._leave()

    def embed_texts(self, texts: Sequence[str], timeout: float | None = None) -> list[TextResult | TextError]:
        """One result per text, in order; blank ones fail alone."""
        self._enter("texts", len(texts), timeout, False)
        try:
            return [TextResult(vector(len(t)), len(t.split()) + 2, False) if t.strip() else TextError("text is empty")
                    for t in texts]
        finally:
            self._leave()

    def close(self) -> None:
        """Remember that the server released the engine."""
        self.closed = True

    def _enter(self, what: str, n: int, timeout: float | None, wait_for_room: bool) -> None:
        with self._lock:
            self.calls.append((what, n, timeout, wait_for_room))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.entered.release()
        if self.fail is not None:
            self._leave()
            raise self.fail
        if not self._open.wait(timeout):
            self._leave()
            raise DeadlineExceeded("deadline passed while embedding")

    def _leave(self) -> None:
        with self._lock:
            self.running -= 1
