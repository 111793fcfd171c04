"""Hub bundles offline: vocabulary from merges.txt, graph normalization, and a fast, helpful offline error."""

from __future__ import annotations

import gzip
import json
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from embedder_service.models import bundle as bundles
from embedder_service.models import hub
from embedder_service.models.bundle import CLIP_MEAN, CLIP_STD, BundleError

SHARED_CLIP = Path(__file__).resolve().parents[3] / "shared" / "clip"


def shared_merges(tmp_path: Path) -> Path:
    """A merges.txt as transformers tokenizers ship it, made from the shared vocabulary."""
    with gzip.open(SHARED_CLIP / bundles.VOCAB_FILE, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    path = tmp_path / "merges.txt"
    path.write_text("\n".join(["#version: 0.2", *lines[1 : hub.N_MERGES + 1]]) + "\n", encoding="utf-8")
    return path


def test_vocab_from_merges_reproduces_the_reference_merges(tmp_path: Path) -> None:
    made = tmp_path / "made.txt.gz"
    hub.vocab_from_merges(shared_merges(tmp_path), made)
    with gzip.open(made, "rt", encoding="utf-8") as f:
        ours = f.read().split("\n")
    with gzip.open(SHARED_CLIP / bundles.VOCAB_FILE, "rt", encoding="utf-8") as f:
        reference = f.read().split("\n")
    # What a CLIP tokenizer reads: the header line is skipped, then the first 48894 merges.
    assert ours[0] == reference[0]
    assert ours[1 : hub.N_MERGES + 1] == reference[1 : hub.N_MERGES + 1]
    again = tmp_path / "again.txt.gz"
    hub.vocab_from_merges(shared_merges(tmp_path), again)
    assert again.read_bytes() == made.read_bytes(), "same merges, same bytes (and bundle version)"


def test_service_tokenizer_reads_a_converted_vocabulary(tmp_path: Path) -> None:
    from embedder_service.models.bundle import TextSpec
    from embedder_service.tokenizer import TextTokenizer, clip_tokenizer

    made = tmp_path / bundles.VOCAB_FILE
    hub.vocab_from_merges(shared_merges(tmp_path), made)
    tokenizer = TextTokenizer(clip_tokenizer(made), TextSpec())
    cases = json.loads((SHARED_CLIP / "tokenizer_reference.json").read_text())["cases"]
    for case in cases[::10]:
        assert tokenizer.encode(case["text"]) == case["bpe_ids"], case["text"]


def test_vocab_from_merges_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "merges.txt"
    bad.write_text("#version: 0.2\na b\nc d\n")
    with pytest.raises(BundleError, match="not a CLIP BPE merges file"):
        hub.vocab_from_merges(bad, tmp_path / "v.gz")


def test_preprocessing_from_a_transformers_config() -> None:
    config = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "resample": 3,
              "size": {"shortest_edge": 224}, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}
    assert hub.preprocess_from_config(config, 999) == (224, CLIP_MEAN, CLIP_STD)
    assert hub.preprocess_from_config({"crop_size": 336, "size": 336}, 224)[0] == 336
    with pytest.raises(BundleError, match="bicubic"):
        hub.preprocess_from_config(dict(config, resample=2), 224)
    with pytest.raises(BundleError):
        hub.preprocess_from_config(dict(config, size={"shortest_edge": 256}), 224)
    # One mean and std per RGB channel: a grey-scale or RGBA setting would break decoding later.
    with pytest.raises(BundleError, match="image_mean needs 3 values"):
        hub.preprocess_from_config(dict(config, image_mean=[0.5]), 224)
    with pytest.raises(BundleError, match="image_std needs 3 values"):
        hub.preprocess_from_config(dict(config, image_std=[0.5] * 4), 224)


def closed_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_fails_fast_with_the_ways_out(tmp_path: Path, monkeypatch: Any) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    started = time.perf_counter()
    with pytest.raises(hub.HubUnavailable) as caught:
        hub.download(tmp_path / "b")
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert "cannot reach the Hugging Face hub" in message and hub.DEFAULT_REPO in message
    assert "EMBEDDER_MODEL_DIR" in message and "python -m embedder_service.models random" in message
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def hub_like_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Files laid out and named like Xenova/clip-vit-base-patch32, exported from a tiny random CLIP."""
    torch = pytest.importorskip("torch", reason="making hub-like graphs needs the torch extra")
    from embedder_service.models import export

    model = export.random_clip("tiny", seed=3)

    class Vision(torch.nn.Module):  # like optimum's CLIPVisionModelWithProjection export
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.clip.vision_model(pixel_values=pixel_values)
            return self.clip.visual_projection(out.pooler_output), out.last_hidden_state

    class Text(torch.nn.Module):  # CLIPTextModelWithProjection, with the attention_mask input some exports have
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
            return self.clip.text_projection(out.pooler_output), out.last_hidden_state

    root = tmp_path_factory.mktemp("hub")
    (root / "onnx").mkdir()
    ids = torch.tensor([[49406, 320, 1125, 539, 49407] + [0] * 72] * 2)
    mask = (torch.arange(77) < 5).long().expand(2, 77)  # zeros over the padding: the masked path is traced
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Vision().eval(), (torch.zeros(2, 3, 224, 224),), str(root / hub.IMAGE_SRC), dynamo=False,
                          input_names=["pixel_values"], output_names=["image_embeds", "last_hidden_state"],
                          dynamic_axes={"pixel_values": {0: "batch_size"}}, opset_version=14)
        torch.onnx.export(Text().eval(), (ids, mask), str(root / hub.TEXT_SRC), dynamo=False,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["text_embeds", "last_hidden_state"], opset_version=14,
                          dynamic_axes={n: {0: "batch_size", 1: "sequence_length"}
                                        for n in ("input_ids", "attention_mask")})
    shared_merges(root)
    (root / "config.json").write_text(json.dumps({"projection_dim": 512, "text_config": {
        "max_position_embeddings": 77}, "vision_config": {"image_size": 224}}))
    (root / "preprocessor_config.json").write_text(json.dumps({"crop_size": 224, "size": 224, "resample": 3}))
    return {"root": root, "model": model}


def test_hub_files_become_a_bundle_with_our_interface(hub_like_repo: dict[str, Any], tmp_path: Path) -> None:
    from embedder_service.models.export import reference_features
    from embedder_service.models.verify import EOT, cosine_rows

    found = hub.bundle_from_files(hub_like_repo["root"], tmp_path / "b", name="clip-test", source="hf:test@abc")
    assert (found.dim, found.image_size, found.context_length, found.semantic) == (512, 224, 77, True)
    image, text = (onnx.load(str(p)) for p in (found.image_onnx, found.text_onnx))
    assert [(v.name, [o.name for o in g.graph.output]) for g in (image, text) for v in g.graph.input] == [
        ("pixel_values", ["image_embeds"]), ("input_ids", ["text_embeds"])]
    ids = np.array([[49406, 320, 1125, 539, 320, 2368, EOT] + [0] * 70, [49406, 2368, EOT] + [0] * 74])
    import onnxruntime as ort

    session = ort.InferenceSession(str(found.text_onnx), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids})[0]
    assert cosine_rows(got, reference_features(hub_like_repo["model"], ids=ids)).min() >= 0.9999
    short = session.run(None, {"input_ids": ids[1:, :3]})[0]
    assert cosine_rows(short, got[1:]).min() >= 0.99999
    # The hub graph with its real padding mask agrees with ours, which feeds all ones.
    original = ort.InferenceSession(str(hub_like_repo["root"] / hub.TEXT_SRC), providers=["CPUExecutionProvider"])
    masked = original.run(["text_embeds"], {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)})[0]
    assert cosine_rows(masked, got).min() >= 0.99999


def test_int32_ids_get_a_cast(hub_like_repo: dict[str, Any], tmp_path: Path) -> None:
    model = onnx.load(str(hub_like_repo["root"] / hub.TEXT_SRC))
    original = model.graph.input[0].type.tensor_type
    original.elem_type = onnx.TensorProto.INT32
    for node in model.graph.node:  # make the graph really consume int32 ids
        node.input[:] = [n if n != "input_ids" else "ids32" for n in node.input]
    model.graph.node.insert(0, onnx.helper.make_node("Cast", ["input_ids"], ["ids32"], to=onnx.TensorProto.INT64))
    onnx.save(model, str(tmp_path / "text32.onnx"))
    hub.normalize_text_graph(tmp_path / "text32.onnx", tmp_path / "out.onnx")
    fixed = onnx.load(str(tmp_path / "out.onnx"))
    assert fixed.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert fixed.graph.node[0].op_type == "Cast" and fixed.graph.node[0].input[0] == "input_ids"


@pytest.mark.parametrize("damage, message", [("extra_input", "expected inputs"), ("no_embeds", "has no output")])
def test_unexpected_graphs_are_refused(hub_like_repo: dict[str, Any], tmp_path: Path, damage: str,
                                       message: str) -> None:
    model = onnx.load(str(hub_like_repo["root"] / hub.TEXT_SRC))
    if damage == "extra_input":
        model.graph.input.append(onnx.helper.make_tensor_value_info("position_ids", onnx.TensorProto.INT64, [1, 77]))
    else:
        model.graph.output.remove(model.graph.output[0])
    onnx.save(model, str(tmp_path / "t.onnx"))
    with pytest.raises(BundleError, match=message):
        hub.normalize_text_graph(tmp_path / "t.onnx", tmp_path / "out.onnx")
