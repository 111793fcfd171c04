"""Check a bundle's graphs: output width, dynamic batch and sequence, agreement with a reference (no torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embedder_service.models import bundle as bundles
from embedder_service.models.bundle import Bundle

SOT, EOT = 49406, 49407
# Texts of different lengths, run through the bundle's own tokenizer: the whole text path is checked.
SAMPLE_TEXTS = ("a photo of a cat", "two dogs playing in the snow near a red house", "x")


class ExportError(Exception):
    """An export cannot run (missing package, unsupported model) or produced a wrong graph."""


def example_inputs(batch: int, image_size: int, context_length: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Random pixels and padded CLIP token ids of different lengths, ending in eot, for tracing."""
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
    """Check a bundle's graphs: output width, batch and padding invariance, and agreement with a reference.

    The text graph gets ids from the bundle's own tokenizer, padded by its rule (with the attention mask
    where the graph takes one), so a tokenizer the graph cannot read fails here, not in service.
    """
    import onnxruntime as ort

    from embedder_service.model import run_graph
    from embedder_service.tokenizer import TextTokenizer

    pixels = np.random.default_rng(0).standard_normal((3, 3, found.image_size, found.image_size)).astype(np.float32)
    tok = TextTokenizer.of(found)
    rows = [tok.tokenize(t)[0] for t in SAMPLE_TEXTS]
    ids, mask = tok.pad(rows)
    alone_ids, alone_mask = tok.pad(rows[:1])  # row 0 padded on its own: shorter under "longest"

    def text_feed(ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        return {bundles.TEXT_INPUT: ids, bundles.TEXT_MASK: mask} if found.text.attention_mask else {
            bundles.TEXT_INPUT: ids}

    image_session, text_session = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                                   for p in (found.image_onnx, found.text_onnx))
    # Batch and sequence length may only change rounding; the reference check allows min_cosine.
    checks: list[tuple[str, np.ndarray, np.ndarray, float]] = []
    for path, session, output, feed, alone, reference in (
            (found.image_onnx, image_session, bundles.IMAGE_OUTPUT, {bundles.IMAGE_INPUT: pixels},
             {bundles.IMAGE_INPUT: pixels[:1]}, image),
            (found.text_onnx, text_session, bundles.TEXT_OUTPUT, text_feed(ids, mask),
             text_feed(alone_ids, alone_mask), text)):
        try:
            out = run_graph(session, output, feed)
            first = run_graph(session, output, alone)
        except Exception as exc:  # onnxruntime raises its own types for shape and type mismatches
            why = " ".join(str(exc).split())[:300]
            raise ExportError(f"{path.name} does not run on the bundle's inputs: {why}") from None
        n = len(next(iter(feed.values())))
        if out.shape != (n, found.dim):
            raise ExportError(f"{path.name} gives shape {out.shape}, expected {(n, found.dim)}")
        width = next(iter(alone.values())).shape[-1]
        checks.append((f"{path.name} batch 1 ({width} wide) vs {n}", first, out[:1], 0.99999))
        if reference is not None:
            checks.append((f"{path.name} vs torch", out, reference(next(iter(feed.values()))), min_cosine))
    for what, got, want, floor in checks:
        worst = float(cosine_rows(got, want).min())
        if not worst >= floor:
            raise ExportError(f"export check failed: {what}: cosine {worst:.6f} < {floor}")
