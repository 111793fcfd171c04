"""Exported graphs against the PyTorch model with the same random weights (tiny preset; one slow ViT-B/32 run)."""

from __future__ import annotations

import json
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason="export checks need the torch extra")
pytest.importorskip("transformers", reason="export checks need the torch extra")

import onnxruntime as ort  # noqa: E402

from embedder_service.models import bundle as bundles  # noqa: E402
from embedder_service.models import export  # noqa: E402
from embedder_service.models.verify import EOT, cosine_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "test-bundles"  # the root conftest's cache: bundles built once per code version
REFERENCE = REPO.parent / "shared" / "clip" / "tokenizer_reference.json"


def session(path: Path) -> ort.InferenceSession:
    """A CPU session like the service's."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(path: Path, feed: np.ndarray) -> np.ndarray:
    """Run a one-input graph."""
    s = session(path)
    return s.run(None, {s.get_inputs()[0].name: feed})[0]


def real_ids(n: int) -> np.ndarray:
    """n padded token-id rows made by the reference CLIP tokenizer, of varied lengths."""
    cases = json.loads(REFERENCE.read_text())["cases"]
    rows = sorted({tuple(c["ids_77"]) for c in cases}, key=lambda r: (r.index(EOT), r))
    picked = [rows[i * (len(rows) - 1) // (n - 1)] for i in range(n)]
    return np.array(picked, dtype=np.int64)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1."""
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    """Half white noise, half blocky low-frequency images clipped to the range of normalized photos."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n - n // 2, 3, 224, 224))
    coarse = rng.standard_normal((n // 2, 3, 7, 7))
    blocky = np.repeat(np.repeat(coarse, 32, axis=2), 32, axis=3).clip(-1.8, 2.1)
    return np.concatenate([noise, blocky]).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_model() -> Any:
    """The PyTorch CLIP whose weights the cached tiny bundle holds (same preset, same seed)."""
    return export.random_clip("tiny", seed=0)


@pytest.fixture(scope="module")
def inputs(tiny_model: Any) -> dict[str, np.ndarray]:
    """Shared inputs and transformers' own reference embeddings for them."""
    pix, ids = pixels(6), real_ids(8)
    return {"pixels": pix, "ids": ids, "image_ref": export.reference_features(tiny_model, pixels=pix),
            "text_ref": export.reference_features(tiny_model, ids=ids)}


def test_bundle_describes_a_random_model(tiny_bundle_dir: Path) -> None:
    found = bundles.load(tiny_bundle_dir)
    assert (found.semantic, found.source, found.precision) == (False, "random:tiny:seed0", "fp32")
    assert (found.dim, found.image_size, found.context_length) == (512, 224, 77)
    assert found.version == bundles.compute_version(found)


def test_graph_interface(tiny_bundle_dir: Path) -> None:
    image = onnx.load(str(tiny_bundle_dir / bundles.IMAGE_FILE), load_external_data=False)
    text = onnx.load(str(tiny_bundle_dir / bundles.TEXT_FILE), load_external_data=False)
    assert [i.name for i in image.graph.input] == ["pixel_values"]
    assert [o.name for o in image.graph.output] == ["image_embeds"]
    assert [i.name for i in text.graph.input] == ["input_ids"]
    assert [o.name for o in text.graph.output] == ["text_embeds"]
    ids_dims = text.graph.input[0].type.tensor_type.shape.dim
    assert text.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert all(d.dim_param and not d.dim_value for d in ids_dims), "batch and sequence must be dynamic"
    assert min(o.version for o in text.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_fp32_matches_torch(tiny_bundle_dir: Path, inputs: dict[str, np.ndarray]) -> None:
    image = run(tiny_bundle_dir / bundles.IMAGE_FILE, inputs["pixels"])
    text = run(tiny_bundle_dir / bundles.TEXT_FILE, inputs["ids"])
    assert cosine_rows(image, inputs["image_ref"]).min() >= 0.9999
    assert cosine_rows(text, inputs["text_ref"]).min() >= 0.9999
    # Not normalized: the graph returns the raw projection, as the bundle format says.
    assert np.allclose(np.linalg.norm(image, axis=1), np.linalg.norm(inputs["image_ref"], axis=1), rtol=1e-3)


def test_random_embeddings_depend_on_the_input(inputs: dict[str, np.ndarray]) -> None:
    # Guards the fidelity checks: near-identical embeddings for all inputs would pass them trivially.
    for ref in (inputs["image_ref"], inputs["text_ref"]):
        similarity = unit(ref) @ unit(ref).T
        assert similarity[~np.eye(len(ref), dtype=bool)].mean() < 0.9


def test_sequence_axis_is_dynamic(tiny_bundle_dir: Path, inputs: dict[str, np.ndarray]) -> None:
    s = session(tiny_bundle_dir / bundles.TEXT_FILE)
    padded = s.run(None, {"input_ids": inputs["ids"]})[0]
    for row, ids in enumerate(inputs["ids"]):
        cut = ids[None, : int(np.argmax(ids == EOT)) + 1]  # e.g. [sot, 5 tokens, eot]: no padding at all
        short = s.run(None, {"input_ids": cut})[0]
        assert cosine_rows(short, padded[row : row + 1])[0] >= 0.99999, f"row {row}, {cut.shape[1]} tokens"


def test_batch_size_does_not_change_results(tiny_bundle_dir: Path, inputs: dict[str, np.ndarray]) -> None:
    for name, feed in ((bundles.IMAGE_FILE, inputs["pixels"]), (bundles.TEXT_FILE, inputs["ids"])):
        s = session(tiny_bundle_dir / name)
        key = s.get_inputs()[0].name
        together = s.run(None, {key: feed})[0]
        alone = np.concatenate([s.run(None, {key: feed[i : i + 1]})[0] for i in range(len(feed))])
        assert cosine_rows(together, alone).min() >= 0.99999, name


def test_int8_is_faithful(inputs: dict[str, np.ndarray]) -> None:
    int8 = bundles.load(export.cached_random_bundle(CACHE, "tiny", "int8"))
    assert int8.precision == "int8"
    for name, feed, ref in ((bundles.IMAGE_FILE, inputs["pixels"], inputs["image_ref"]),
                            (bundles.TEXT_FILE, inputs["ids"], inputs["text_ref"])):
        got = run(int8.path / name, feed)
        assert cosine_rows(got, ref).min() >= 0.99, name
        # Each int8 vector must still be nearest to its own fp32 vector among all the others.
        assert (np.argmax(unit(got) @ unit(ref).T, axis=1) == np.arange(len(feed))).all(), name


def test_fp16_is_faithful_with_float32_io(inputs: dict[str, np.ndarray]) -> None:
    fp16 = bundles.load(export.cached_random_bundle(CACHE, "tiny", "fp16"))
    for name, feed, ref in ((bundles.IMAGE_FILE, inputs["pixels"], inputs["image_ref"]),
                            (bundles.TEXT_FILE, inputs["ids"], inputs["text_ref"])):
        s = session(fp16.path / name)
        assert s.get_outputs()[0].type == "tensor(float)"
        got = s.run(None, {s.get_inputs()[0].name: feed})[0]
        assert got.dtype == np.float32 and cosine_rows(got, ref).min() >= 0.999, name


def test_cached_bundle_is_reused(tiny_bundle_dir: Path) -> None:
    stamp = (tiny_bundle_dir / bundles.MANIFEST).stat().st_mtime_ns
    assert export.cached_random_bundle(CACHE, "tiny") == tiny_bundle_dir
    assert (tiny_bundle_dir / bundles.MANIFEST).stat().st_mtime_ns == stamp


def test_cache_race_loser_uses_the_winner(tmp_path: Path, tiny_bundle_dir: Path, monkeypatch: Any) -> None:
    def racing_build(out_dir: Path, preset: str, **_: Any) -> None:
        # Another process finishes first: its complete bundle lands at the final path, then ours is done.
        shutil.copytree(tiny_bundle_dir, tmp_path / f"{preset}-fp32-{export._source_key()}")
        shutil.copytree(tiny_bundle_dir, out_dir)

    monkeypatch.setattr(export, "build_random_bundle", racing_build)
    path = export.cached_random_bundle(tmp_path, "tiny")
    assert bundles.load(path).version == bundles.load(tiny_bundle_dir).version
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "the loser's staging directory is cleaned up"


def fake_open_clip(tiny_model: Any) -> types.ModuleType:
    """A stand-in for the open_clip package (not installable here) with the API export_open_clip uses."""

    class FixedContext(torch.nn.Module):
        # Like open_clip's CLIP.encode_text: a fixed [77, width] positional table (so exactly 77 tokens),
        # causal mixing, pooling at argmax(ids) (eot has the largest id).
        def __init__(self) -> None:
            super().__init__()
            self.clip, self.context_length = tiny_model, 77
            self.visual = types.SimpleNamespace(image_size=224)
            self.token = torch.nn.Embedding(49408, 16)
            self.positions = torch.nn.Parameter(torch.randn(77, 16))
            self.projection = torch.nn.Linear(16, 512)

        def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.clip.visual_projection(self.clip.vision_model(pixel_values=pixel_values).pooler_output)

        def encode_text(self, text: torch.Tensor) -> torch.Tensor:
            x = self.token(text) + self.positions
            x = x.cumsum(dim=1) / torch.arange(1, 78).reshape(1, 77, 1)
            return self.projection(x[torch.arange(x.shape[0]), text.argmax(dim=-1)])

    tokenizer = types.SimpleNamespace(SimpleTokenizer=type("SimpleTokenizer", (), {"context_length": 77}),
                                      default_bpe=lambda: str(export.find_vocab()))
    module = types.ModuleType("open_clip")
    module.tokenizer = tokenizer
    module.model = FixedContext().eval()
    module.create_model_and_transforms = lambda name, pretrained: (module.model, None, None)
    module.get_tokenizer = lambda name: tokenizer.SimpleTokenizer()
    module.get_model_preprocess_cfg = lambda model: {"size": (224, 224), "mean": (0.5,) * 3, "std": (0.2,) * 3,
                                                     "interpolation": "bicubic", "resize_mode": "shortest"}
    return module


def test_export_open_clip_pads_text_to_its_context(tmp_path: Path, tiny_model: Any, monkeypatch: Any) -> None:
    fake = fake_open_clip(tiny_model)
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    found = export.export_open_clip("ViT-Fake", "nothing", tmp_path / "b")
    assert (found.source, found.mean, found.std, found.dim) == ("open_clip:ViT-Fake:nothing", (0.5,) * 3,
                                                                (0.2,) * 3, 512)
    ids = real_ids(4)
    with torch.no_grad():
        want = fake.model.encode_text(torch.from_numpy(ids)).numpy()
    assert cosine_rows(run(found.text_onnx, ids), want).min() >= 0.9999
    cut = ids[:1, : int(np.argmax(ids[0] == EOT)) + 1]  # shorter than 77: padded inside the graph
    assert cosine_rows(run(found.text_onnx, cut), want[:1]).min() >= 0.99999
    fake.get_model_preprocess_cfg = lambda model: {"interpolation": "bilinear"}
    with pytest.raises(export.ExportError, match="bicubic"):
        export.export_open_clip("ViT-Fake", "nothing", tmp_path / "c")


def test_open_clip_missing_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(export.ExportError, match="open_clip_torch"):
            export.export_open_clip("ViT-B-32", "openai", tmp_path / "b")
    else:
        pytest.skip("open_clip is installed; the missing-package path cannot be exercised")


def test_export_transformers_checkpoint(tmp_path: Path, tiny_model: Any, inputs: dict[str, np.ndarray]) -> None:
    checkpoint = tmp_path / "ckpt"
    tiny_model.save_pretrained(checkpoint)
    (checkpoint / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 224}, "resample": 3,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    found = export.export_transformers(checkpoint, tmp_path / "out")
    assert found.source == f"hf:{checkpoint}" and found.semantic and found.mean == (0.5, 0.5, 0.5)
    assert cosine_rows(run(found.text_onnx, inputs["ids"]), inputs["text_ref"]).min() >= 0.9999
    assert cosine_rows(run(found.image_onnx, inputs["pixels"]), inputs["image_ref"]).min() >= 0.9999


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(export.ExportError, match="not empty"):
        export.build_random_bundle(tmp_path, "tiny")
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_vit_b_32_fp32_and_int8_match_torch(capsys: Any) -> None:
    started = time.perf_counter()
    fp32 = export.cached_random_bundle(CACHE, "vit-b-32")
    int8 = export.cached_random_bundle(CACHE, "vit-b-32", "int8")
    model = export.random_clip("vit-b-32", seed=0)
    pix, ids = pixels(4, seed=1), real_ids(4)
    image_ref = export.reference_features(model, pixels=pix)
    text_ref = export.reference_features(model, ids=ids)
    found = {}
    for label, root, floor in (("fp32", fp32, 0.9999), ("int8", int8, 0.99)):
        for name, feed, ref in ((bundles.IMAGE_FILE, pix, image_ref), (bundles.TEXT_FILE, ids, text_ref)):
            found[label, name] = cosine_rows(run(root / name, feed), ref).min()
            assert found[label, name] >= floor, (label, name)
    with capsys.disabled():
        gaps = ", ".join(f"{label} {name} {1 - value:.1e}" for (label, name), value in found.items())
        print(f"\nvit-b-32, 1 - min cosine to torch: {gaps} ({time.perf_counter() - started:.0f}s)")
