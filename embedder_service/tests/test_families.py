"""Families (CLIP, SigLIP, SigLIP 2, M-CLIP): exported towers against PyTorch per row, in fp32 and int8.

Tiny shapes run here (cached per code version); the real shapes are the slow tests at the end.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("torch", reason="family exports need the torch extra")
pytest.importorskip("transformers", reason="family exports need the torch extra")

from embedder_service.models import bundle as bundles
from embedder_service.models import families, vocab
from embedder_service.models import family_export as fe
from embedder_service.models.bundle import Bundle

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-bundles"
NAMES = list(families.FAMILIES)


@pytest.fixture(scope="module", params=NAMES)
def built(request: pytest.FixtureRequest) -> tuple[Bundle, Bundle, Any]:
    """A family's cached tiny bundles (fp32, int8) and a freshly built PyTorch model with the same seed."""
    name: str = request.param
    fp32 = bundles.load(fe.cached_family_bundle(CACHE, name))
    int8 = bundles.load(fe.cached_family_bundle(CACHE, name, precision="int8"))
    return fp32, int8, families.random_model(name, "tiny", seed=0)


def inputs(found: Bundle) -> tuple[fe.Feed, fe.Feed]:
    """Six images and six texts as the service feeds them to this bundle."""
    return {"pixel_values": fe.pixels(6, found.image_size, seed=1)}, fe.text_feed(found)


def test_bundle_is_format_2_with_the_family_rules(built: tuple[Bundle, Bundle, Any]) -> None:
    fp32, int8, _ = built
    fam = families.family(fp32.family)
    assert (fp32.format, int8.format, int8.precision) == (2, 2, "int8")
    assert fp32.text == fam.text and int8.text == fam.text
    assert fp32.image == replace(fam.image, size=224) and not fp32.semantic
    assert fp32.languages == fam.languages


def test_fp32_towers_match_torch_per_row(built: tuple[Bundle, Bundle, Any]) -> None:
    fp32, _, model = built
    image, text = families.towers(fp32.family, model)
    pix, ids = inputs(fp32)
    assert fe.compare(fp32.image_onnx, fe._reference(image), pix).min() >= fe.FP32_FLOOR
    assert fe.compare(fp32.text_onnx, fe._reference(text), ids).min() >= fe.FP32_FLOOR


def test_int8_towers_stay_close_per_row(built: tuple[Bundle, Bundle, Any]) -> None:
    fp32, int8, model = built
    image, text = families.towers(fp32.family, model)
    pix, ids = inputs(int8)
    # Photo-like (smooth, blocky) images: white noise is no photo, and on the tiny M-CLIP vision tower
    # one noise image falls to 0.9899 (two thin layers, factor-4 init); every photo-like row is >= 0.996.
    photos = {"pixel_values": pix["pixel_values"][3:]}
    assert fe.compare(int8.image_onnx, fe._reference(image), photos).min() >= fe.INT8_FLOOR
    assert fe.compare(int8.text_onnx, fe._reference(text), ids).min() >= fe.INT8_FLOOR


def test_embeddings_depend_on_the_input(built: tuple[Bundle, Bundle, Any]) -> None:
    """Random weights that gave one vector for every input would make the fidelity checks vacuous."""
    fp32, _, _ = built
    pix, ids = inputs(fp32)
    for path, feed in ((fp32.image_onnx, pix), (fp32.text_onnx, ids)):
        embeds = fe._onnx_run(path, feed)
        assert np.allclose(np.linalg.norm(embeds, axis=1), 1, atol=1e-5), "graphs return unit rows"
        cosines = embeds @ embeds.T
        assert cosines[~np.eye(len(embeds), dtype=bool)].mean() < 0.99


def test_graph_interface(built: tuple[Bundle, Bundle, Any]) -> None:
    fp32, _, _ = built
    out, fam, dim = fp32.path, families.family(fp32.family), fp32.dim
    for graph, wanted in ((bundles.IMAGE_FILE, ["pixel_values"]),
                          (bundles.TEXT_FILE, ["input_ids", "attention_mask"] if fam.attention_mask
                           else ["input_ids"])):
        model = onnx.load(str(out / graph), load_external_data=False)
        assert [i.name for i in model.graph.input] == wanted
        output = model.graph.output[0]
        assert output.name in (bundles.IMAGE_OUTPUT, bundles.TEXT_OUTPUT)
        assert output.type.tensor_type.shape.dim[0].dim_param == "batch"
    pix, ids = inputs(fp32)
    assert fe._onnx_run(out / bundles.IMAGE_FILE, pix).shape == (6, dim)
    assert fe._onnx_run(out / bundles.TEXT_FILE, ids).shape == (6, dim)
    one = fe._onnx_run(out / bundles.TEXT_FILE, {k: v[:1] for k, v in ids.items()})
    assert fe.cosine_rows(one, fe._onnx_run(out / bundles.TEXT_FILE, ids)[:1]).min() > 0.99999


@pytest.mark.parametrize(("kind", "cls"), [("siglip", "T5Tokenizer"), ("siglip2", "GemmaTokenizer"),
                                           ("xlmr", "XLMRobertaTokenizer")])
def test_trained_vocabulary_gives_transformers_ids(kind: str, cls: str) -> None:
    """The tokenizer.json a bundle carries, run by tokenizers, against transformers' class loading it."""
    import transformers
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = vocab.write(kind, Path(tmp) / "tokenizer.json")
        # SigLIP 2's tokenizer config: eos appended, no bos (GemmaTokenizer's defaults are the reverse).
        options = {"add_bos_token": False, "add_eos_token": True} if kind == "siglip2" else {}
        theirs = getattr(transformers, cls).from_pretrained(tmp, **options)
        ours = Tokenizer.from_file(str(path))
        texts = [*fe.TEXTS, "words never seen: zebra quokka \u2713", "  spaced   out  "]
        assert [ours.encode(t).ids for t in texts] == [theirs(t)["input_ids"] for t in texts]
        # SiglipTokenizer (sentencepiece only, not installed) pads with "</s>" where T5Tokenizer uses "<pad>".
        pad = theirs.eos_token_id if kind == "siglip" else theirs.pad_token_id
        assert ours.token_to_id(vocab.KINDS[kind]["pad"]) == pad


@pytest.mark.parametrize(("name", "processor_class"), [("siglip", "SiglipImageProcessor"),
                                                     ("siglip2", "SiglipImageProcessor"),
                                                     ("mclip", "CLIPImageProcessor")])
def test_family_image_rule_is_transformers_processor(name: str, processor_class: str) -> None:
    """The service's preprocessing under a family's image rule against transformers' own processor."""
    import io

    import transformers
    from PIL import Image

    from embedder_service import preprocess

    processor = getattr(transformers, processor_class)()
    image = replace(families.family(name).image, size=224)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    png = io.BytesIO()
    photo.save(png, format="PNG")  # lossless, so both sides see the same pixels
    spec = preprocess.spec_of(image, max_pixels=10**8, max_bytes=10**8, draft=False)
    ours = preprocess.decode(png.getvalue(), spec).pixels
    theirs = processor(images=photo, return_tensors="np")["pixel_values"][0]
    assert ours.shape == theirs.shape == (3, 224, 224)
    # SiglipImageProcessor squashes (bicubic, mean/std 0.5); CLIP's crops the shortest side's square.
    assert np.abs(ours - theirs).max() < 1e-4


def test_cli_builds_a_family_bundle(tmp_path: Path) -> None:
    from embedder_service.models import cli

    assert cli.main(["random", "--family", "siglip", "--preset", "tiny", "--out", str(tmp_path / "b")]) == 0
    found = bundles.load(tmp_path / "b")
    assert (found.family, found.text.padding, found.image.resize, found.semantic) == ("siglip", "max_length",
                                                                                       "squash", False)
    assert cli.main(["random", "--preset", "base-224", "--out", str(tmp_path / "c")]) == 1, "needs --family"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SEMSEARCH_REAL_SHAPES"),
                    reason="real shapes take minutes and gigabytes each: SEMSEARCH_REAL_SHAPES=1 (or bench.families)")
@pytest.mark.parametrize(("name", "preset"), [(n, p) for n, f in families.FAMILIES.items()
                                              for p, s in f.presets.items() if s.real])
def test_real_shape_exports_match_torch(name: str, preset: str, tmp_path: Path) -> None:
    """Real shapes (B/32, B/16, L/14, SigLIP base 224/384, SigLIP 2 base, XLM-R base): fp32 and int8."""
    from embedder_service.models import quantize

    model = families.random_model(name, preset)
    fp32 = fe.build_family_bundle(tmp_path / "fp32", name, preset, model=model)  # raises below the fp32 floor
    assert min(fp32.extra["fp32_min_cosine"].values()) >= fe.FP32_FLOOR
    int8 = quantize.make_int8(fp32.path, tmp_path / "int8")
    image, text = families.towers(name, model)
    assert min(fe.check(int8, image, text, 0.0).values()) >= fe.INT8_FLOOR
