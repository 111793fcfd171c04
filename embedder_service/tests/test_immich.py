"""immich's ONNX layout offline: files of the same layout made here from a tiny random CLIP, converted and served."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedder_service.models import bundle as bundles
from embedder_service.models import hub, immich
from embedder_service.models.bundle import BundleError
from embedder_service.tokenizer import write_clip_tokenizer

VOCAB = Path(__file__).resolve().parents[3] / "shared" / "clip" / bundles.VOCAB_FILE


def make_repo(root: Path, model: Any, with_mask: bool) -> Path:
    """An immich-like repository: batch fixed at 1, int32 ids padded to 77, outputs named "embedding"."""
    import torch

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            out = self.clip.vision_model(pixel_values=image)
            return self.clip.visual_projection(out.pooler_output)

    class Textual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            out = self.clip.text_model(input_ids=ids.long(), attention_mask=None if mask is None else mask.long())
            return self.clip.text_projection(out.pooler_output)

    for sub in ("visual", "textual"):
        (root / sub).mkdir(parents=True)
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73], dtype=torch.int32)
    text_args: tuple[torch.Tensor, ...] = (ids, (ids != 0).int()) if with_mask else (ids,)
    names = ["input_ids", "attention_mask"] if with_mask else ["text"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Visual().eval(), (torch.zeros(1, 3, 224, 224),), str(root / immich.VISUAL), dynamo=False,
                          input_names=["image"], output_names=["embedding"], opset_version=14)
        torch.onnx.export(Textual().eval(), text_args, str(root / immich.TEXTUAL), dynamo=False,
                          input_names=names, output_names=["embedding"], opset_version=14)
    write_clip_tokenizer(VOCAB, root / immich.TOKENIZER)
    (root / immich.TOKENIZER_CONFIG).write_text(json.dumps({"pad_token": "<|endoftext|>"}))
    (root / immich.CONFIG).write_text(json.dumps({"embed_dim": 512, "vision_cfg": {"image_size": 224},
                                                  "text_cfg": {"context_length": 77}}))
    (root / immich.PREPROCESS).write_text(json.dumps({
        "size": [224, 224], "mode": "RGB", "mean": list(bundles.CLIP_MEAN), "std": list(bundles.CLIP_STD),
        "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}))
    return root


@pytest.fixture(scope="module")
def tiny() -> Any:
    pytest.importorskip("torch", reason="making immich-like graphs needs the torch extra")
    from embedder_service.models import export

    return export.random_clip("tiny", seed=5)


@pytest.fixture(scope="module")
def immich_repo(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("immich") / "ViT-B-32__openai", tiny, with_mask=False)


def test_immich_files_become_a_bundle_that_serves(immich_repo: Path, tiny: Any, tmp_path: Path) -> None:
    from embedder_service.model import ClipModel
    from embedder_service.models.export import reference_features
    from embedder_service.models.verify import cosine_rows
    from embedder_service.tokenizer import TextTokenizer

    found = immich.bundle_from_immich(immich_repo, tmp_path / "b", name="ViT-B-32__openai", source="hf:test")
    assert (found.format, found.family, found.languages, found.dim) == (2, "clip", ("en",), 512)
    assert (found.text.padding, found.text.pad_id, found.text.attention_mask) == ("max_length", 49407, False)
    assert found.image == bundles.ImageSpec(size=224)
    model = ClipModel(found, provider="cpu")
    tok = TextTokenizer.of(found)
    ids, mask = tok.pad([tok.tokenize(t)[0] for t in ("a photo of a cat", "a dog")])
    assert ids.shape == (2, 77)
    got = model.embed_tokens(ids, mask)  # a batch of 2 through a graph fixed at batch 1
    assert cosine_rows(got, reference_features(tiny, ids=ids)).min() >= 0.9999
    pixels = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    assert cosine_rows(model.embed_pixels(pixels), reference_features(tiny, pixels=pixels)).min() >= 0.9999


def test_masked_text_tower_keeps_its_attention_mask(tiny: Any, tmp_path: Path) -> None:
    from embedder_service.model import ClipModel

    repo = make_repo(tmp_path / "XLM-Roberta-Large-Vit-B-32", tiny, with_mask=True)
    found = immich.bundle_from_immich(repo, tmp_path / "b", name=repo.name, source="hf:test")
    assert found.text.attention_mask and found.languages == ("multilingual",)
    model = ClipModel(found, provider="cpu")
    ids = np.full((1, 77), 49407, dtype=np.int64)
    ids[0, :3] = [49406, 320, 49407]
    assert model.embed_tokens(ids, (np.arange(77) < 3).astype(np.int64)[None]).shape == (1, 512)


def test_download_takes_the_immich_layout(immich_repo: Path, tmp_path: Path, monkeypatch: Any) -> None:
    import huggingface_hub

    files = {str(p.relative_to(immich_repo)) for p in immich_repo.rglob("*") if p.is_file()}
    files |= {"visual/fp16/model.armnn", "README.md"}  # other formats in the repository are not fetched
    fetched: list[str] = []
    monkeypatch.setattr(hub, "_resolve", lambda repo, revision, timeout: ("f" * 40, files))

    def fake_download(repo_id: str, name: str, revision: str, local_dir: Path, etag_timeout: float) -> str:
        fetched.append(name)
        (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
        return str(shutil.copyfile(immich_repo / name, Path(local_dir) / name))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    found = hub.download(tmp_path / "b", repo_id="immich-app/ViT-B-32__openai")
    assert sorted(fetched) == sorted(immich.REQUIRED + (immich.TOKENIZER_CONFIG,))
    assert found.source == f"hf:immich-app/ViT-B-32__openai@{'f' * 40}" and bundles.load(found.path) == found


@pytest.mark.parametrize(("damage", "message"), [
    ("no_tokenizer", "tokenizer.json: missing"),
    ("resize", "preprocess_cfg.json: field resize_mode: unknown 'letterbox'"),
    ("interpolation", "preprocess_cfg.json: field interpolation: unknown 'area'"),
    ("embed_dim", "config.json: field embed_dim"),
    ("context", "config.json: field text_cfg.context_length is 64"),
    ("pad", "tokenizer_config.json: field pad_token"),
])
def test_bad_immich_files_are_refused_naming_file_and_field(immich_repo: Path, tmp_path: Path, damage: str,
                                                           message: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(immich_repo, repo)

    def edit(name: str, **changes: Any) -> None:
        data = json.loads((repo / name).read_text())
        (repo / name).write_text(json.dumps({**data, **changes}))

    if damage == "no_tokenizer":
        (repo / immich.TOKENIZER).unlink()
    elif damage == "resize":
        edit(immich.PREPROCESS, resize_mode="letterbox")
    elif damage == "interpolation":
        edit(immich.PREPROCESS, interpolation="area")
    elif damage == "embed_dim":
        edit(immich.CONFIG, embed_dim=768)
    elif damage == "context":
        edit(immich.CONFIG, text_cfg={"context_length": 64})
    else:
        edit(immich.TOKENIZER_CONFIG, pad_token="<pad>")
    with pytest.raises(BundleError, match=message.replace(".", r"\.")):
        immich.bundle_from_immich(repo, tmp_path / "b", name="x", source="test")
    assert not (tmp_path / "b").exists()
