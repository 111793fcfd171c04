"""Families (CLIP, SigLIP, SigLIP 2, M-CLIP): exported towers against PyTorch per row, in fp32 and int8.

Tiny shapes run here (cached per code version); the real shapes are the slow tests at the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("torch", reason="family exports need the torch extra")
pytest.importorskip("transformers", reason="family exports need the torch extra")

from embedder_service.models import bundle as bundles  # noqa: E402
from embedder_service.models import families, vocab  # noqa: E402
from embedder_service.models import family_export as fe  # noqa: E402

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-bundles"
NAMES = list(families.FAMILIES)


@pytest.fixture(scope="module", params=NAMES)
def built(request: pytest.FixtureRequest) -> tuple[str, Path, Any]:
    """A family's cached tiny export and a freshly built PyTorch model with the same seed."""
    name: str = request.param
    return name, fe.cached_towers(CACHE, name), families.random_model(name, "tiny", seed=0)


def inputs(name: str, out: Path) -> tuple[fe.Feed, fe.Feed]:
    """Six images and six texts as the family feeds them."""
    fam = families.family(name)
    return {"pixel_values": fe.pixels(6, 224, seed=1)}, fe.text_feed(fam, out / "tokenizer.json")


def test_fp32_towers_match_torch_per_row(built: tuple[str, Path, Any]) -> None:
    name, out, model = built
    image, text = families.towers(name, model)
    pix, ids = inputs(name, out)
    assert fe.compare(out / bundles.IMAGE_FILE, fe._reference(image), pix).min() >= fe.FP32_FLOOR
    assert fe.compare(out / bundles.TEXT_FILE, fe._reference(text), ids).min() >= fe.FP32_FLOOR


def test_int8_towers_stay_close_per_row(built: tuple[str, Path, Any]) -> None:
    name, out, model = built
    image, text = families.towers(name, model)
    pix, ids = inputs(name, out)
    # Photo-like (smooth, blocky) images: white noise is no photo, and on the tiny M-CLIP vision tower
    # one noise image falls to 0.9899 (two thin layers, factor-4 init); every photo-like row is >= 0.996.
    photos = {"pixel_values": pix["pixel_values"][3:]}
    assert fe.compare(out / "int8" / bundles.IMAGE_FILE, fe._reference(image), photos).min() >= fe.INT8_FLOOR
    assert fe.compare(out / "int8" / bundles.TEXT_FILE, fe._reference(text), ids).min() >= fe.INT8_FLOOR


def test_embeddings_depend_on_the_input(built: tuple[str, Path, Any]) -> None:
    """Random weights that gave one vector for every input would make the fidelity checks vacuous."""
    name, out, _ = built
    pix, ids = inputs(name, out)
    for path, feed in ((out / bundles.IMAGE_FILE, pix), (out / bundles.TEXT_FILE, ids)):
        embeds = fe._onnx_run(path, feed)
        assert np.allclose(np.linalg.norm(embeds, axis=1), 1, atol=1e-5), "graphs return unit rows"
        cosines = embeds @ embeds.T
        assert cosines[~np.eye(len(embeds), dtype=bool)].mean() < 0.99


def test_graph_interface(built: tuple[str, Path, Any]) -> None:
    name, out, _ = built
    fam = families.family(name)
    dim = families.shape(fam, "tiny").dim
    for graph, wanted in ((bundles.IMAGE_FILE, ["pixel_values"]),
                          (bundles.TEXT_FILE, ["input_ids", "attention_mask"] if fam.attention_mask
                           else ["input_ids"])):
        model = onnx.load(str(out / graph), load_external_data=False)
        assert [i.name for i in model.graph.input] == wanted
        output = model.graph.output[0]
        assert output.name in (bundles.IMAGE_OUTPUT, bundles.TEXT_OUTPUT)
        assert output.type.tensor_type.shape.dim[0].dim_param == "batch"
    pix, ids = inputs(name, out)
    assert fe._onnx_run(out / bundles.IMAGE_FILE, pix).shape == (6, dim)
    assert fe._onnx_run(out / bundles.TEXT_FILE, ids).shape == (6, dim)
    one = fe._onnx_run(out / bundles.TEXT_FILE, {k: v[:1] for k, v in ids.items()})
    assert fe.cosine_rows(one, fe._onnx_run(out / bundles.TEXT_FILE, ids)[:1]).min() > 0.99999


@pytest.mark.parametrize(("kind", "cls"), [("siglip", "T5Tokenizer"), ("xlmr", "XLMRobertaTokenizer")])
def test_trained_vocabulary_gives_transformers_ids(kind: str, cls: str) -> None:
    """The tokenizer.json a bundle carries, run by tokenizers, against transformers' class loading it."""
    import transformers
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = vocab.write(kind, Path(tmp) / "tokenizer.json")
        theirs = getattr(transformers, cls).from_pretrained(tmp)
        ours = Tokenizer.from_file(str(path))
        texts = [*fe.TEXTS, "words never seen: zebra quokka", "  spaced   out  "]
        assert [ours.encode(t).ids for t in texts] == [theirs(t)["input_ids"] for t in texts]
        # SiglipTokenizer (sentencepiece only, not installed) pads with "</s>" where T5Tokenizer uses "<pad>".
        pad = theirs.eos_token_id if kind == "siglip" else theirs.pad_token_id
        assert ours.token_to_id(vocab.KINDS[kind]["pad"]) == pad


def test_siglip_image_rule_is_transformers_processor() -> None:
    """SiglipImageProcessor squashes to a square, bicubic, mean and std 0.5: what the family says."""
    from PIL import Image
    from transformers import SiglipImageProcessor

    processor = SiglipImageProcessor()
    fam = families.family("siglip")
    assert (processor.size["height"], processor.size["width"]) == (224, 224)
    assert int(processor.resample) == int(Image.Resampling.BICUBIC) and fam.interpolation == "bicubic"
    assert tuple(processor.image_mean) == fam.mean and tuple(processor.image_std) == fam.std
    # A squash, numerically: PIL bicubic to 224x224, scaled to [0,1], normalized, against the processor.
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    theirs = processor(images=photo, return_tensors="np")["pixel_values"][0]
    squashed = np.asarray(photo.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    ours = ((squashed - 0.5) / 0.5).transpose(2, 0, 1)
    assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize(("name", "preset"), [(n, p) for n, f in families.FAMILIES.items()
                                              for p, s in f.presets.items() if s.real])
def test_real_shape_exports_match_torch(name: str, preset: str, tmp_path: Path) -> None:
    """Real shapes (B/32, B/16, L/14, SigLIP base 224/384, SigLIP 2 base, XLM-R base): fp32 and int8."""
    fam = families.family(name)
    model = families.random_model(name, preset)
    report = fe.export_towers(name, preset, tmp_path, model=model)  # raises below the fp32 floor
    assert min(report["fp32_min_cosine"].values()) >= fe.FP32_FLOOR
    fe.int8_towers(tmp_path, tmp_path / "int8")
    image, text = families.towers(name, model)
    worst = fe.check(tmp_path / "int8", fam, families.shape(fam, preset).image_size, image, text, 0.0)
    assert min(worst.values()) >= fe.INT8_FLOOR
