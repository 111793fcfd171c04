"""Bundle format 2 and 1: what model.json may say, and one-line refusals naming the file and the field."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from embedder_service.models import bundle as bundles
from embedder_service.models.bundle import BundleError

VOCAB = Path(__file__).resolve().parents[3] / "shared" / "clip" / bundles.VOCAB_FILE


@pytest.fixture
def v2(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny format-2 bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "b"))


def edit(root: Path, change: Any) -> None:
    data = json.loads((root / bundles.MANIFEST).read_text())
    change(data)
    (root / bundles.MANIFEST).write_text(json.dumps(data))


def test_random_bundles_are_format_2(tiny_bundle_dir: Path) -> None:
    data = json.loads((tiny_bundle_dir / bundles.MANIFEST).read_text())
    assert data["format"] == 2 and data["family"] == "clip" and data["languages"] == ["en"]
    assert data["image"] == {"size": 224, "resize": "shortest_edge_center_crop", "interpolation": "bicubic",
                             "mean": list(bundles.CLIP_MEAN), "std": list(bundles.CLIP_STD)}
    assert data["text"] == {"tokenizer": "tokenizer.json", "context_length": 77, "padding": "longest",
                            "lower_case": True, "clean": "whitespace", "pad_id": 0, "attention_mask": False}
    found = bundles.load(tiny_bundle_dir)
    assert found.format == 2 and json.loads(json.dumps(bundles.manifest(found))) == data


def test_format_1_loads_onto_the_same_description(v2: Path) -> None:
    """An old bundle (no "format", BPE vocabulary) is served exactly as before, through the same types."""
    from embedder_service.tokenizer import TextTokenizer

    new = bundles.load(v2)
    (v2 / bundles.TOKENIZER_FILE).unlink()
    shutil.copyfile(VOCAB, v2 / bundles.VOCAB_FILE)
    old = {"name": new.name, "source": new.source, "dim": new.dim, "image_size": 224, "context_length": 77,
           "precision": "fp32", "mean": list(bundles.CLIP_MEAN), "std": list(bundles.CLIP_STD),
           "resize": "shortest_edge_bicubic_center_crop", "semantic": False, "version": "abc", "extra": {}}
    (v2 / bundles.MANIFEST).write_text(json.dumps(old))
    found = bundles.load(v2)
    assert found.format == 1 and found.image == new.image and found.model_id == f"{new.name}@abc"
    assert found.text == replace(new.text, tokenizer=bundles.VOCAB_FILE)
    assert TextTokenizer.of(found).tokenize("a photo of a cat")[0] == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d["image"].update(resize="letterbox"), "model.json: field image.resize: unknown 'letterbox'"),
    (lambda d: d["image"].update(interpolation="area"), "model.json: field image.interpolation: unknown 'area'"),
    (lambda d: d["image"].update(size=True), "model.json: field image.size: expected a number"),
    (lambda d: d["image"].update(mean=[0.5]), "model.json: field image.mean: mean needs 3 values"),
    (lambda d: d["text"].update(padding="left"), "model.json: field text.padding: unknown 'left'"),
    (lambda d: d["text"].update(clean="ftfy"), "model.json: field text.clean: unknown 'ftfy'"),
    (lambda d: d["text"].pop("pad_id"), "model.json: field text.pad_id: missing"),
    (lambda d: d["text"].update(tokenizer="../t.json"), "model.json: field text.tokenizer: expected a tokenizer"),
    (lambda d: d.pop("text"), "model.json: field text: expected an object"),
    (lambda d: d.update(format=3), "model.json: field format: unknown bundle format 3"),
    (lambda d: d.update(dim=0), "model.json: field dim: must be at least 1"),
    (lambda d: d.update(languages=[]), "model.json: field languages: expected a non-empty list"),
])
def test_bad_manifest_is_refused_naming_the_field(v2: Path, damage: Any, message: str) -> None:
    edit(v2, damage)
    with pytest.raises(BundleError) as caught:
        bundles.load(v2)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda t: t["model"].pop("vocab"), "tokenizer.json: field model.vocab: missing or empty"),
    (lambda t: t["model"].pop("merges"), "tokenizer.json: field model.merges: missing"),
    (lambda t: t.pop("model"), "tokenizer.json: field model: missing"),
])
def test_tokenizer_without_vocabulary_is_refused(v2: Path, damage: Any, message: str) -> None:
    path = v2 / bundles.TOKENIZER_FILE
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message.replace(".", r"\.")):
        bundles.load(v2)


def test_missing_tokenizer_names_the_field(v2: Path) -> None:
    (v2 / bundles.TOKENIZER_FILE).unlink()
    with pytest.raises(BundleError, match=r"tokenizer\.json is missing \(named by model\.json field text\.tokenizer\)"):
        bundles.load(v2)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d.update(dim=768), "image.onnx: output image_embeds has width 512, model.json field dim says 768"),
    (lambda d: d["image"].update(size=256), "image.onnx: input pixel_values is 224 pixels wide, model.json field "
                                           "image.size says 256"),
    (lambda d: d["text"].update(attention_mask=True), "text.onnx: inputs ['input_ids'] do not match model.json "
                                                      "field text.attention_mask"),
])
def test_graphs_that_disagree_with_the_manifest_are_refused_at_load(v2: Path, damage: Any, message: str) -> None:
    from embedder_service.model import ClipModel

    edit(v2, damage)
    with pytest.raises(BundleError) as caught:
        ClipModel(bundles.load(v2), provider="cpu")
    assert message in str(caught.value) and "\n" not in str(caught.value)
