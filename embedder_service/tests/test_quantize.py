"""int8 and fp16 bundles: what is quantized, what stays fp32, and how derived bundles are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from embedder_service.models import bundle as bundles
from embedder_service.models import quantize
from embedder_service.models.bundle import BundleError

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-bundles"


def two_layer_graph() -> onnx.ModelProto:
    """x -> MatMul -> Relu -> MatMul -> Add -> y, weights as initializers."""
    import numpy as np

    w1, w2 = (numpy_helper.from_array(np.ones((4, 4), np.float32), name) for name in ("w1", "w2"))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["p"], name="projection"),
             helper.make_node("Add", ["p", "p"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w1, w2])
    return helper.make_model(graph)


def test_output_matmuls_finds_the_projection_only() -> None:
    assert quantize.output_matmuls(two_layer_graph()) == ["projection"]


@pytest.fixture(scope="module")
def int8_dir(tiny_bundle_dir: Path) -> Path:
    """The cached int8 variant of the tiny bundle (the default method: dynamic)."""
    from embedder_service.models import export

    return export.cached_random_bundle(CACHE, "tiny", "int8")


@pytest.fixture(scope="module")
def static_dir(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle quantized statically (calibrated on synthetic photos)."""
    return quantize.make_int8(tiny_bundle_dir, tmp_path_factory.mktemp("static") / "int8", method="static").path


def ops(path: Path) -> list[onnx.NodeProto]:
    """The nodes of a graph file."""
    return list(onnx.load(str(path)).graph.node)


def test_dynamic_int8_quantizes_linear_layers_but_not_stem_or_projection(int8_dir: Path) -> None:
    image = ops(int8_dir / bundles.IMAGE_FILE)
    kinds = [n.op_type for n in image]
    assert "Conv" in kinds and "ConvInteger" not in kinds, "the patch embedding stays fp32"
    # Tiny: 2 layers x (q, k, v, out, fc1, fc2) weight MatMuls are integer; the projection is not.
    assert kinds.count("MatMulInteger") == 12
    model = onnx.load(str(int8_dir / bundles.IMAGE_FILE))
    assert [n.op_type for n in model.graph.node if n.name in quantize.output_matmuls(model)] == ["MatMul"]
    assert bundles.load(int8_dir).extra["int8"]["method"] == "onnxruntime dynamic"


def dequantized_inputs(model: onnx.ModelProto) -> dict[str, int]:
    """Per op type, how many of its nodes read an input through a DequantizeLinear (a QDQ-quantized op)."""
    from_dq = {out for n in model.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if any(name in from_dq for name in node.input):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_static_int8_quantizes_linear_layers_with_qdq_but_not_stem_or_projection(static_dir: Path) -> None:
    model = onnx.load(str(static_dir / bundles.IMAGE_FILE))
    counts = dequantized_inputs(model)
    # Tiny: the 12 weight MatMuls of 2 layers plus the 4 attention products (q.k and attention.v).
    assert counts.get("MatMul") == 16 and "Conv" not in counts, counts
    from_dq = {out for n in model.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    projection = [n for n in model.graph.node if n.name in quantize.output_matmuls(model)]
    assert [n.op_type for n in projection] == ["MatMul"]
    assert not from_dq & set(projection[0].input), "the projection stays fp32"
    extra = bundles.load(static_dir).extra["int8"]
    assert extra["method"] == "onnxruntime static" and extra["calibration_source"] == "synthetic image-like JPEGs"
    assert extra["image"].startswith("static") and extra["static_min_cosine"] >= quantize.STATIC_FLOOR


def unit_rows(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)  # typed here: numpy's norm() gives Any
    return unit


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_int8_is_faithful_to_fp32_per_row(method: str, int8_dir: Path, static_dir: Path,
                                          tiny_bundle_dir: Path) -> None:
    """Cosine >= 0.99 to fp32 per row, on images other than the calibration ones, one at a time and batched."""
    import onnxruntime as ort

    from embedder_service.models import calibrate

    quantized = static_dir if method == "static" else int8_dir
    photos = [calibrate.synthetic_photo(seed) for seed in range(1000, 1012)]
    feed = calibrate.calibration_pixels(bundles.load(tiny_bundle_dir), photos)

    def embed(root: Path, rows: np.ndarray) -> np.ndarray:
        s = ort.InferenceSession(str(root / bundles.IMAGE_FILE), providers=["CPUExecutionProvider"])
        return unit_rows(s.run(None, {bundles.IMAGE_INPUT: rows})[0])

    reference = embed(tiny_bundle_dir, feed)
    alone = np.concatenate([embed(quantized, feed[i:i + 1]) for i in range(len(feed))])
    for got in (alone, embed(quantized, feed)):
        assert (got * reference).sum(axis=1).min() >= 0.99


def test_unknown_method_is_refused(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(quantize.QuantizeError, match="unknown int8 method 'fast'"):
        quantize.make_int8(tiny_bundle_dir, tmp_path / "x", method="fast")
    assert not (tmp_path / "x").exists()


def test_int8_text_embedding_table_is_8_bit(int8_dir: Path, tiny_bundle_dir: Path) -> None:
    table = max(onnx.load(str(int8_dir / bundles.TEXT_FILE)).graph.initializer, key=lambda t: len(t.raw_data))
    assert table.data_type in (TensorProto.INT8, TensorProto.UINT8)
    assert (int8_dir / bundles.TEXT_FILE).stat().st_size < (tiny_bundle_dir / bundles.TEXT_FILE).stat().st_size / 2


def test_derived_bundles_get_their_own_version(int8_dir: Path, tiny_bundle_dir: Path) -> None:
    source, derived = bundles.load(tiny_bundle_dir), bundles.load(int8_dir)
    assert derived.precision == "int8" and derived.version != source.version
    assert derived.extra["derived_from"] == source.model_id
    assert (derived.name, derived.dim, derived.semantic) == (source.name, source.dim, source.semantic)
    assert derived.version == bundles.compute_version(derived)


def test_fp16_weights_with_float32_io(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    fp16 = quantize.make_fp16(tiny_bundle_dir, tmp_path / "fp16")
    assert fp16.precision == "fp16"
    for path in (fp16.image_onnx, fp16.text_onnx):
        summary = quantize.graph_summary(path)
        assert summary.weights == ["FLOAT16"]
        assert [o.split()[1].split("[")[0] for o in summary.outputs] == ["float"], summary


def test_refuses_to_requantize_or_overwrite(int8_dir: Path, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(quantize.QuantizeError, match="from an fp32 bundle"):
        quantize.make_int8(int8_dir, tmp_path / "twice")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(quantize.QuantizeError, match="not empty"):
        quantize.make_int8(tiny_bundle_dir, tmp_path / "taken")
    with pytest.raises(BundleError):
        quantize.make_fp16(tmp_path / "taken", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
