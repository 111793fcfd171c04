"""ONNX Runtime sessions for the two CLIP towers, on CUDA when it really runs, else CPU."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from embedder_service.models import bundle as bundles

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderError(RuntimeError):
    """The requested execution provider cannot run this model here."""


def candidate_providers(requested: str, available: Sequence[str]) -> list[str]:
    """Providers to try, best first: the requested ones that this onnxruntime build offers."""
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise ProviderError(
                "EMBEDDER_PROVIDER=cuda but this onnxruntime build has no CUDA provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu"
            )
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


def check_active(requested: str, active: Sequence[str]) -> None:
    """Fail when CUDA was demanded but the session silently fell back to the CPU."""
    if requested == "cuda" and (not active or active[0] != CUDA):
        raise ProviderError(
            "EMBEDDER_PROVIDER=cuda but the session could not run on CUDA (no GPU visible, or the "
            "CUDA/cuDNN libraries onnxruntime-gpu needs are missing); see the log above for the "
            "loader's reason, or use EMBEDDER_PROVIDER=auto to run on the CPU"
        )


class ClipModel:
    """The image and text towers of one bundle; outputs are L2-normalized float32."""

    def __init__(self, bundle: bundles.Bundle, provider: str = "auto", threads: int = 0) -> None:
        self.bundle = bundle
        wanted = candidate_providers(provider, ort.get_available_providers())
        self._image = _session(bundle.image_onnx, wanted, threads)
        active = self._image.get_providers()
        check_active(provider, active)
        # Both towers run on what the first one really got, so a fallback is never half-done.
        self._text = _session(bundle.text_onnx, active, threads)
        self.providers = list(active)
        if provider == "auto" and CUDA in wanted and active[0] != CUDA:
            log.warning("CUDA provider is listed but did not load; running on the CPU")
        log.info("model %s (%s) on %s", bundle.model_id, bundle.precision, ", ".join(self.providers))

    def embed_pixels(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """[N,3,S,S] float32 preprocessed images -> [N,D] unit vectors."""
        out = self._image.run([bundles.IMAGE_OUTPUT], {bundles.IMAGE_INPUT: pixels})[0]
        return _normalize(out)

    def embed_tokens(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        """[N,L] int64 token ids (L <= context length, 0-padded) -> [N,D] unit vectors."""
        out = self._text.run([bundles.TEXT_OUTPUT], {bundles.TEXT_INPUT: ids})[0]
        return _normalize(out)


def _session(path: os.PathLike[str], providers: Sequence[str], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def _normalize(vectors: np.ndarray) -> NDArray[np.float32]:
    vectors = vectors.astype(np.float32, copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: NDArray[np.float32] = vectors / np.maximum(norms, 1e-12)  # typed here: numpy's norm() gives Any
    return unit
