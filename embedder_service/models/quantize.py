"""Derived bundles: int8 (static or dynamic quantization, for CPUs) and fp16 (for GPUs). ONNX tools only, no torch."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from embedder_service.models import bundle as bundles
from embedder_service.models.bundle import Bundle, BundleError

log = logging.getLogger(__name__)

# Measured on the random ViT-B/32 bundle, ONNX Runtime CPU, 2 threads, batch 8, AVX-512 VNNI host
# (a shared, noisy 2-core machine: times are rough), all MatMuls quantized; min cosine to fp32 over
# 16 inputs, and image-tower time relative to fp32:
#   QInt8 per-tensor        0.9992, 0.38x     QUInt8 per-tensor   0.9992, 0.68x
#   QInt8 per-channel       0.9994, 0.41x     QUInt8 per-channel  0.9995, 0.74x
#   QInt8 per-channel 7-bit 0.9986, 0.41x
# Signed weights use the fast kernel (u8 activations x s8 weights). 7-bit weights (reduce_range) cost a
# little fidelity but cannot saturate the 16-bit intermediate sums of the AVX2 kernel that CPUs without
# VNNI use (e.g. AMD Zen 2/3), so one int8 bundle is faithful on every x86 host.
# Static QDQ (calibrate.py) against dynamic, the random ViT-B/32 image tower, 2 threads sleeping between
# operators, min cosine to fp32
# over 8 held-out synthetic photos, medians of 3 interleaved rounds on a quiet 2-core Intel Xeon with
# AVX-512 VNNI and AMX (2026-12-02): dynamic 18.2 ms at batch 1, 8.9 ms per image at batch 8, cosine
# 0.9986; static 22.2 and 12.4, 0.9982; fp32 49.3 and 33.5. ONNX Runtime fuses the dynamic MatMul with its
# scales and bias (MatMulIntegerToFloat); the static graph keeps QuantizeLinear, DequantizeLinear and the
# bias Add as nodes of their own (5 ms of 22). So dynamic is the default, chosen on that VNNI host. On a busy
# AVX2 host without VNNI (load average 13-20, medians of 12 rounds) static had measured 1.2-1.3x faster: on
# such hosts build with method="static" and compare with bench.embedder.
WEIGHT_TYPE = "QInt8"
PER_CHANNEL = True
REDUCE_RANGE = True
# MatMul only: the patch-embedding Conv (the vision stem) stays fp32. The text tower also quantizes its
# token-embedding Gather: 100 MB of the 250 MB file, for 0.0001 of cosine.
OP_TYPES = {bundles.IMAGE_FILE: ["MatMul"], bundles.TEXT_FILE: ["MatMul", "Gather"]}
METHODS = ("static", "dynamic")
DEFAULT_METHOD = "dynamic"
STATIC_FLOOR = 0.99  # a static image tower below this cosine to fp32 (per row) falls back to dynamic


class QuantizeError(Exception):
    """A conversion failed or would overwrite something."""


def output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm nodes nearest the graph output (the final projection)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found, seen = [], set()
    stack = [out.name for out in model.graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in ("MatMul", "Gemm"):
            found.append(node.name)
        else:
            stack.extend(node.input)
    return found


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Silence the quantizer's per-tensor notes, which it logs on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _int8_graph(src: Path, dst: Path) -> None:
    """Dynamically quantize one graph, keeping the stem and the output projection in fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    # The projection is one small MatMul per input, and it maps straight onto the output: fp32 there
    # buys fidelity for nothing measurable in time.
    keep = [name for name in output_matmuls(model) if name]
    if not keep:
        log.warning("%s: no named output projection found; it is quantized too", src.name)
    with _quiet_root_logger():
        quantize_dynamic(src, dst, op_types_to_quantize=OP_TYPES[src.name], per_channel=PER_CHANNEL,
                         reduce_range=REDUCE_RANGE, weight_type=getattr(QuantType, WEIGHT_TYPE),
                         nodes_to_exclude=keep)


def _fp16_graph(src: Path, dst: Path) -> None:
    """Convert one graph's weights and arithmetic to float16, with float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers keep feeding and reading float32; casts sit at the graph edges.
    converted = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(converted, str(dst))


def _derive(src_dir: str | Path, dst_dir: str | Path, precision: str,
            convert: Callable[[Path, Path], None], settings: dict[str, Any]) -> Bundle:
    """Write a new bundle whose graphs are convert(source graphs), with its own version hash."""
    source = bundles.load(src_dir)
    if source.precision != "fp32":
        raise QuantizeError(f"{source.path} is {source.precision}; convert from an fp32 bundle")
    dst = Path(dst_dir)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise QuantizeError(f"{dst} already exists and is not empty; choose a new directory")
    with bundles.staged(dst) as staging:
        for name in (bundles.IMAGE_FILE, bundles.TEXT_FILE):
            convert(source.path / name, staging / name)
        from embedder_service.tokenizer import write_tokenizer_json  # tokenizers, only when deriving

        tokenizer = write_tokenizer_json(source, staging)
        derived = replace(source, precision=precision, path=staging, version="",
                          text=replace(source.text, tokenizer=tokenizer),
                          extra={**source.extra, "derived_from": source.model_id, precision: settings})
        bundles.save(derived)
    result = bundles.load(dst)
    log.info("wrote %s bundle %s to %s", precision, result.model_id, dst)
    return result


def make_int8(src_dir: str | Path, dst_dir: str | Path, method: str = DEFAULT_METHOD,
              calibration: Sequence[bytes] = ()) -> Bundle:
    """An int8 bundle from an fp32 bundle, for CPU serving.

    method "static": the image tower calibrated ahead of time (QDQ, see calibrate.py; calibration: encoded
    images, synthetic ones when empty); "dynamic": activation ranges measured on every call. The text tower
    is dynamic in both (short queries; its big table is a Gather that only needs 8-bit weights).
    """
    if method not in METHODS:
        raise QuantizeError(f"unknown int8 method {method!r}; choose one of {', '.join(METHODS)}")
    settings: dict[str, Any] = {"method": f"onnxruntime {method}", "weight_type": WEIGHT_TYPE,
                                "per_channel": PER_CHANNEL, "reduce_range": REDUCE_RANGE, "op_types": OP_TYPES}
    convert = _int8_graph
    if method == "static":
        from embedder_service.models import calibrate

        pixels = calibrate.calibration_pixels(bundles.load(src_dir), calibration)
        settings.update(image="static QDQ, min/max calibration", activation_type=calibrate.ACTIVATION_TYPE,
                        calibration_images=len(pixels),
                        calibration_source="given images" if calibration else "synthetic image-like JPEGs",
                        text="dynamic")

        held_out = calibrate.calibration_pixels(bundles.load(src_dir), [calibrate.synthetic_photo(seed)
                                                                         for seed in range(10_000, 10_008)])

        def convert(src: Path, dst: Path) -> None:
            if src.name != bundles.IMAGE_FILE:
                _int8_graph(src, dst)
                return
            keep = [name for name in output_matmuls(onnx.load(str(src))) if name]
            with _quiet_root_logger():
                calibrate.static_image_graph(src, dst, pixels, keep, OP_TYPES[bundles.IMAGE_FILE])
            # Checked, not assumed: some towers (a tiny SigLIP's attention-pooling head) have activation
            # ranges that fixed scales cannot hold; those keep dynamic quantization.
            worst = calibrate.worst_cosine(src, dst, held_out)
            settings["static_min_cosine"] = round(worst, 6)
            if worst < STATIC_FLOOR:
                log.warning("%s: static int8 gives cosine %.4f to fp32 (< %.2f); quantizing it dynamically",
                            src.name, worst, STATIC_FLOOR)
                settings["image"] = f"dynamic (static gave min cosine {worst:.4f})"
                _int8_graph(src, dst)

    return _derive(src_dir, dst_dir, "int8", convert, settings)


def make_fp16(src_dir: str | Path, dst_dir: str | Path) -> Bundle:
    """An fp16 bundle (float32 IO) from an fp32 bundle, for GPU serving."""
    return _derive(src_dir, dst_dir, "fp16", _fp16_graph, {"method": "onnxruntime float16", "keep_io_types": True})


@dataclass(frozen=True)
class GraphSummary:
    """A graph's interface and weight types, as `models info` shows them."""

    inputs: list[str]
    outputs: list[str]
    weights: list[str]
    opset: int


def graph_summary(path: Path) -> GraphSummary:
    """Inputs, outputs (name, type, dims) and weight types of one graph file."""
    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Iterable[onnx.ValueInfoProto]) -> list[str]:
        shown = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_param or str(d.dim_value) for d in tensor.shape.dim]
            shown.append(f"{value.name} {onnx.TensorProto.DataType.Name(tensor.elem_type).lower()}[{','.join(dims)}]")
        return shown

    if not model.graph.input:
        raise BundleError(f"{path} has no inputs")
    return GraphSummary(
        inputs=describe(model.graph.input), outputs=describe(model.graph.output),
        weights=sorted({onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}),
        opset=max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0))
