"""Static (calibrated) int8 of the image tower: QDQ graphs whose activation scales are fixed ahead of time.

Dynamic quantization measures each MatMul input's range on every call; static quantization measures it
once here, over calibration images sent through the service's own preprocessing, and writes the scales
into the graph as QuantizeLinear/DequantizeLinear pairs, which ONNX Runtime fuses into integer kernels.
Calibration images are synthetic but image-like (smooth colour fields with edges and noise, JPEG-encoded
and decoded exactly as requests are): bundles built here carry random or downloaded weights and no photo
set ships with the project. Pass your own JPEGs (calibration=...) for a real model and real photos.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from PIL import Image

from embedder_service.models import bundle as bundles
from embedder_service.models.bundle import Bundle
from embedder_service.preprocess import decode, spec_of

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 32  # min/max ranges settle after a few dozen inputs; more only costs build time
ACTIVATION_TYPE = "QUInt8"  # u8 activations x s8 weights: the x86 integer kernel (VPMADDUBSW / VNNI)
WEIGHT_TYPE = "QInt8"
PER_CHANNEL = True
# 7-bit weights: the AVX2 kernel without VNNI sums pairs of u8 x s8 products into 16 bits, which 8-bit
# weights can saturate; 7 bits cannot. One bundle then stays faithful on every x86 host.
REDUCE_RANGE = True


def synthetic_photo(seed: int, width: int = 320, height: int = 256) -> bytes:
    """A JPEG that looks like a photo to the first layers: smooth colour regions, edges, fine noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (rng.integers(3, 9), rng.integers(3, 9), 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC), np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # A few straight edges (horizon, walls) and a light gradient, as photos have.
    for _ in range(int(rng.integers(1, 4))):
        a, b = rng.normal(size=2)
        base += np.where(a * (x - width / 2) + b * (y - height / 2) > 0, 1.0, -1.0)[..., None] * rng.uniform(-40, 40, 3)
    base += (y / height)[..., None] * rng.uniform(-60, 60, 3)
    base += rng.normal(0, rng.uniform(2, 12), base.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=int(rng.integers(70, 95)))
    return buf.getvalue()


def calibration_pixels(bundle: Bundle, images: Sequence[bytes] = ()) -> NDArray[np.float32]:
    """Model inputs [N,3,S,S] from the given encoded images, or from synthetic ones when none are given."""
    datas = list(images) or [synthetic_photo(seed) for seed in range(CALIBRATION_IMAGES)]
    spec = spec_of(bundle.image, max_pixels=40_000_000, max_bytes=64 << 20, draft=False)
    return np.stack([decode(data, spec).pixels for data in datas])


def _reader(pixels: NDArray[np.float32]):  # type: ignore[no-untyped-def]  # onnxruntime ships no stubs
    """A CalibrationDataReader feeding one image at a time (the graph's batch axis is dynamic)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, NDArray[np.float32]]] = (
                {bundles.IMAGE_INPUT: pixels[i:i + 1]} for i in range(len(pixels)))

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            return next(self._feeds, None)

    return Reader()


def static_image_graph(src: Path, dst: Path, pixels: NDArray[np.float32], keep: list[str],
                       op_types: list[str]) -> None:
    """Quantize the image graph statically (QDQ, per-channel weights), calibrated on pixels (min/max)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(src, dst, _reader(pixels), quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                    per_channel=PER_CHANNEL, reduce_range=REDUCE_RANGE, nodes_to_exclude=keep,
                    activation_type=getattr(QuantType, ACTIVATION_TYPE), weight_type=getattr(QuantType, WEIGHT_TYPE),
                    calibrate_method=CalibrationMethod.MinMax)
    onnx.checker.check_model(str(dst))


def worst_cosine(reference: Path, candidate: Path, pixels: NDArray[np.float32]) -> float:
    """Lowest per-row cosine between two image graphs' outputs on pixels, each image run alone."""
    import onnxruntime as ort

    def embed(path: Path) -> NDArray[np.float32]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        rows = np.concatenate([session.run(None, {bundles.IMAGE_INPUT: pixels[i:i + 1]})[0]
                               for i in range(len(pixels))])
        unit: NDArray[np.float32] = rows / np.linalg.norm(rows, axis=1, keepdims=True)  # norm() is typed Any
        return unit

    return float((embed(reference) * embed(candidate)).sum(axis=1).min())
