"""ONNX Runtime sessions for the two CLIP towers, on CUDA when it really runs, else CPU."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from embedder_service.config import EmbedderConfig
from embedder_service.models import bundle as bundles

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# ONNX Runtime bounds a spin (session.intra_op.spin_duration_us) from 1.27 on; an older one ignores the bound
# and spins without limit, the worst case on shared cores, so there the threads sleep at once instead.
BOUNDED_SPIN_SINCE = (1, 27)


class ProviderError(RuntimeError):
    """The requested execution provider cannot run this model here."""


def candidate_providers(requested: str, available: Sequence[str], blocker: str | None = None) -> list[str]:
    """Providers to try, best first: the requested ones that this onnxruntime build offers and can run.

    blocker is why CUDA cannot run here (see cuda_blocker), or None when nothing is known against it.
    """
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise ProviderError(
                "EMBEDDER_PROVIDER=cuda but this onnxruntime build has no CUDA provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu"
            )
        if blocker:
            raise ProviderError(f"EMBEDDER_PROVIDER=cuda but CUDA cannot run here: {blocker}")
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available and not blocker else [CPU]


def cuda_blocker(available: Sequence[str]) -> str | None:
    """Why the CUDA provider cannot run here (a missing library, driver or GPU), or None when it can.

    Offering CUDA to a session that cannot load it makes onnxruntime print a red "Failed to load library"
    error before falling back, which reads as a failure; so we load what it would load first, quietly.
    """
    if CUDA not in available:
        return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    if not sys.platform.startswith("linux"):
        return None  # only Linux is probed; elsewhere the session's own fallback decides
    capi = _capi_dir()
    provider, bridge = capi / "libonnxruntime_providers_cuda.so", capi / "libonnxruntime_providers_shared.so"
    if not provider.is_file():
        return None  # a package layout this probe does not know: the session's own fallback decides
    _preload_pip_cuda()
    try:
        # The order onnxruntime uses: the shared bridge (globally, it defines Provider_GetHost), then CUDA's.
        if bridge.is_file():
            ctypes.CDLL(str(bridge), mode=os.RTLD_GLOBAL)
        ctypes.CDLL(str(provider))
    except OSError as exc:
        return _load_failure(str(exc))
    return _driver_blocker(getattr(ort, "cuda_version", "") or "")


def _capi_dir() -> Path:
    """Where onnxruntime keeps its provider libraries."""
    return Path(ort.__file__).resolve().parent / "capi"


def _preload_pip_cuda() -> None:
    """Load CUDA libraries installed as pip wheels (onnxruntime-gpu[cuda,cudnn]), which no loader path finds."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or importlib.util.find_spec("nvidia") is None:
        return
    # It prints a line per library it cannot find; our probe states the reason once instead.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        preload(directory="")


def _load_failure(message: str) -> str:
    """dlopen's message as a short reason: "libcudart.so.13 not found"."""
    missing = re.search(r"([\w.+-]+\.so[\w.]*): cannot open shared object file", message)
    if missing:
        return f"{missing.group(1)} not found"
    return "the CUDA provider library does not load: " + " ".join(message.split())[:300]


def _driver_blocker(build_cuda: str) -> str | None:
    """Why the NVIDIA driver (libcuda, a dependency the provider just loaded) cannot run it, or None."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "libcuda.so.1 not found (no NVIDIA driver)"
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    if driver.cuDriverGetVersion(ctypes.byref(version)) == 0 and build_cuda.split(".")[0].isdigit():
        needed = int(build_cuda.split(".")[0])
        if version.value // 1000 < needed:
            return (f"the NVIDIA driver supports CUDA {version.value // 1000}.{version.value % 1000 // 10}, "
                    f"this onnxruntime-gpu needs CUDA {needed}")
    status = driver.cuInit(0)
    if status == 100:  # CUDA_ERROR_NO_DEVICE
        return "no CUDA-capable GPU is visible"
    if status != 0:
        return f"the NVIDIA driver does not start (cuInit error {status})"
    if driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "no CUDA-capable GPU is visible"
    return None


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

    def __init__(self, bundle: bundles.Bundle, provider: str = "auto", threads: int = 0,
                 spin_us: int = EmbedderConfig.spin_us) -> None:
        self.bundle = bundle
        available = ort.get_available_providers()
        blocker = cuda_blocker(available) if provider != "cpu" else None
        if provider == "auto" and blocker:
            log.info("CUDA not used: %s", blocker)
        wanted = candidate_providers(provider, available, blocker)
        if spin_us and not bounded_spin(ort.__version__):
            log.info("ONNX Runtime %s cannot bound a spin: its threads sleep between operators", ort.__version__)
            spin_us = 0
        self._image = _session(bundle.image_onnx, wanted, threads, spin_us)
        active = self._image.get_providers()
        check_active(provider, active)
        # Both towers run on what the first one really got, so a fallback is never half-done.
        self._text = _session(bundle.text_onnx, active, threads, spin_us)
        check_graphs(bundle, _interface(self._image), _interface(self._text))
        self.providers = list(active)
        if provider == "auto" and CUDA in wanted and active[0] != CUDA:
            log.warning("CUDA provider is listed but did not load; running on the CPU")
        log.info("model %s (%s) on %s", bundle.model_id, bundle.precision, ", ".join(self.providers))

    def embed_pixels(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """[N,3,S,S] float32 preprocessed images -> [N,D] unit vectors."""
        return _normalize(run_graph(self._image, bundles.IMAGE_OUTPUT, {bundles.IMAGE_INPUT: pixels}))

    def embed_tokens(self, ids: NDArray[np.int64], mask: NDArray[np.int64] | None = None) -> NDArray[np.float32]:
        """[N,L] int64 token ids (L <= context length, padded) -> [N,D] unit vectors.

        mask (1 = token, 0 = padding) is fed to towers that take one; the others ignore it.
        """
        feed = {bundles.TEXT_INPUT: ids}
        if self.bundle.text.attention_mask:
            feed[bundles.TEXT_MASK] = np.ones_like(ids) if mask is None else mask
        return _normalize(run_graph(self._text, bundles.TEXT_OUTPUT, feed))


def run_graph(session: ort.InferenceSession, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    """One output of a session; a graph exported for batch 1 only (immich's) is run row by row."""
    rows = len(next(iter(feed.values())))
    if session.get_inputs()[0].shape[0] != 1 or rows <= 1:
        result: np.ndarray = session.run([output], feed)[0]
        return result
    return np.concatenate([session.run([output], {k: v[i : i + 1] for k, v in feed.items()})[0] for i in range(rows)])


Interface = tuple[dict[str, list[int | str | None]], dict[str, list[int | str | None]]]  # inputs, outputs: shape


def _interface(session: ort.InferenceSession) -> Interface:
    """A session's input and output names with their shapes (a str or None for a dynamic axis)."""
    inputs = {i.name: list(i.shape) for i in session.get_inputs()}
    return inputs, {o.name: list(o.shape) for o in session.get_outputs()}


def check_graphs(bundle: bundles.Bundle, image: Interface, text: Interface) -> None:
    """Refuse graphs that disagree with model.json: one line naming the file and the field."""
    text_inputs = {bundles.TEXT_INPUT, bundles.TEXT_MASK} if bundle.text.attention_mask else {bundles.TEXT_INPUT}
    for name, (inputs, outputs), want_in, out in (
            (bundles.IMAGE_FILE, image, {bundles.IMAGE_INPUT}, bundles.IMAGE_OUTPUT),
            (bundles.TEXT_FILE, text, text_inputs, bundles.TEXT_OUTPUT)):
        if set(inputs) != want_in:
            field = "text.attention_mask" if name == bundles.TEXT_FILE else "image"
            raise bundles.BundleError(f"{bundle.path / name}: inputs {sorted(inputs)} do not match {bundles.MANIFEST} "
                                      f"field {field} (expected {sorted(want_in)})")
        if out not in outputs:
            raise bundles.BundleError(f"{bundle.path / name}: no output {out!r} (it has {sorted(outputs)})")
        width = outputs[out][-1] if outputs[out] else None
        if isinstance(width, int) and width != bundle.dim:
            raise bundles.BundleError(f"{bundle.path / name}: output {out} has width {width}, {bundles.MANIFEST} "
                                      f"field dim says {bundle.dim}")
    side = image[0][bundles.IMAGE_INPUT][-1:]
    if side and isinstance(side[0], int) and side[0] != bundle.image.size:
        raise bundles.BundleError(f"{bundle.path / bundles.IMAGE_FILE}: input {bundles.IMAGE_INPUT} is {side[0]} "
                                  f"pixels wide, {bundles.MANIFEST} field image.size says {bundle.image.size}")


def _session(path: os.PathLike[str], providers: Sequence[str], threads: int, spin_us: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # Worker threads wait for the next operator spinning for up to spin_us, then sleep (0: sleep at once).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_us > 0 else "0")
    if spin_us > 0:
        options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def bounded_spin(version: str) -> bool:
    """Whether this ONNX Runtime version honours a spin's duration."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return found is not None and (int(found[1]), int(found[2])) >= BOUNDED_SPIN_SINCE


def _normalize(vectors: np.ndarray) -> NDArray[np.float32]:
    vectors = vectors.astype(np.float32, copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: NDArray[np.float32] = vectors / np.maximum(norms, 1e-12)  # typed here: numpy's norm() gives Any
    return unit
