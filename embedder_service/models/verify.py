"""Check a bundle's graphs: output width, dynamic batch and sequence, agreement with a reference (no torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embedder_service.models.bundle import Bundle

SOT, EOT = 49406, 49407


class ExportError(Exception):
    """An export cannot run (missing package, unsupported model) or produced a wrong graph."""


def example_inputs(batch: int, image_size: int, context_length: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Random pixels and padded token ids of different lengths, ending in eot, for tracing and checks."""
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    ids = np.zeros((batch, context_length), dtype=np.int64)
    for row in range(batch):
        n = 5 + row * 3
        ids[row, 0], ids[row, 1 : n + 1], ids[row, n + 1] = SOT, rng.integers(1, SOT, n), EOT
    return pixels, ids


def cosine_rows(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.float64]:
    """Cosine similarity of matching rows."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cosines: NDArray[np.float64] = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return cosines


def verify_bundle(found: Bundle, image: Callable[[np.ndarray], np.ndarray] | None = None,
                  text: Callable[[np.ndarray], np.ndarray] | None = None, min_cosine: float = 0.9999) -> None:
    """Check a bundle's graphs: output width, dynamic batch and sequence, and agreement with a reference."""
    import onnxruntime as ort

    pixels, ids = example_inputs(3, found.image_size, found.context_length)
    short = ids[:1, : int(np.argmax(ids[0] == EOT)) + 1]  # row 0 cut right after its eot
    # Batch and sequence length may only change rounding; the reference check allows min_cosine.
    checks: list[tuple[str, np.ndarray, np.ndarray, float]] = []
    for path, feed, reference in ((found.image_onnx, pixels, image), (found.text_onnx, ids, text)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out = session.run(None, {name: feed})[0]
        if out.shape != (len(feed), found.dim):
            raise ExportError(f"{path.name} gives shape {out.shape}, expected {(len(feed), found.dim)}")
        checks.append((f"{path.name} batch 1 vs {len(feed)}", session.run(None, {name: feed[:1]})[0], out[:1],
                       0.99999))
        if path == found.text_onnx:
            checks.append((f"{path.name} {short.shape[1]} vs {ids.shape[1]} tokens",
                           session.run(None, {name: short})[0], out[:1], 0.99999))
        if reference is not None:
            checks.append((f"{path.name} vs torch", out, reference(feed), min_cosine))
    for what, got, want, floor in checks:
        worst = float(cosine_rows(got, want).min())
        if not worst >= floor:
            raise ExportError(f"export check failed: {what}: cosine {worst:.6f} < {floor}")
