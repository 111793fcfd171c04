"""Model families as PyTorch references: seeded random weights in a real or a tiny shape, and their towers.

Every tower has the bundle's graph interface and returns L2-normalised rows: image pixel_values float32
[N,3,S,S] -> [N,D]; text input_ids int64 [N,L] (+ attention_mask int64 [N,L] for XLM-R) -> [N,D].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from embedder_service.models.bundle import ImageSpec, TextSpec
from embedder_service.models.verify import EOT, SOT, ExportError

if TYPE_CHECKING:
    import torch

CLIP_VOCAB = 49408
TINY_VOCAB = 1024  # tiny shapes: room for every trained stand-in vocabulary (vocab.py; Gemma's BPE has 861)
_TINY = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
_B = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
_L = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
_CLIP_TEXT_B = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8}
_CLIP_TEXT_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
# transformers' CLIP init (factor 1) gives near-constant image embeddings; see export.INIT_SCALE.
CLIP_INIT = 4.0
# XLM-R keeps transformers' init (std 0.02, as the real model was initialised): unrelated tiny texts
# already differ (mean cosine 0.89). A 10x wider init breaks int8 on the real shape: 12 layers of
# oversized activations gave a worst text cosine of 0.893, against 0.9992 with std 0.02 (measured here).
XLMR_INIT = 0.02


@dataclass(frozen=True)
class Shape:
    """One preset of a family: tower shapes and the embedding width."""

    vision: dict[str, Any]
    text: dict[str, Any]
    dim: int
    image_size: int
    real: bool
    text_vocab: int = 0  # the real vocabulary size (0: the family's default)


@dataclass(frozen=True)
class Family:
    """What a bundle of this family needs besides its graphs: languages, tokenizer, text and image rules."""

    name: str
    languages: tuple[str, ...]
    tokenizer: str  # "clip-bpe" or a vocab.KINDS key
    text: TextSpec
    image: ImageSpec  # its size is each preset's
    presets: dict[str, Shape] = field(default_factory=dict)

    @property
    def attention_mask(self) -> bool:
        return self.text.attention_mask

    @property
    def context_length(self) -> int:
        return self.text.context_length


_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HALF = (0.5, 0.5, 0.5)
_CLIP_PRESETS = {
    "tiny": Shape(dict(_TINY, patch_size=32), dict(_TINY), 512, 224, real=False),
    "vit-b-32": Shape(dict(_B, patch_size=32), _CLIP_TEXT_B, 512, 224, real=True),
    "vit-b-16": Shape(dict(_B, patch_size=16), _CLIP_TEXT_B, 512, 224, real=True),
    "vit-l-14": Shape(dict(_L, patch_size=14), _CLIP_TEXT_L, 768, 224, real=True),
}
_SIGLIP_PRESETS = {
    "tiny": Shape(dict(_TINY, patch_size=16), dict(_TINY), 64, 224, real=False),
    "base-224": Shape(dict(_B, patch_size=16), dict(_B), 768, 224, real=True, text_vocab=32000),
    "base-384": Shape(dict(_B, patch_size=16), dict(_B), 768, 384, real=True, text_vocab=32000),
}
_SIGLIP2_PRESETS = {
    "tiny": _SIGLIP_PRESETS["tiny"],
    "base-224": Shape(dict(_B, patch_size=16), dict(_B), 768, 224, real=True, text_vocab=256000),
}
_CLIP_IMAGE = ImageSpec(resize="shortest_edge_center_crop", interpolation="bicubic", mean=_CLIP_MEAN, std=_CLIP_STD)
# SiglipImageProcessor: squash to a square, bicubic (resample=3), mean and std 0.5.
_SIGLIP_IMAGE = ImageSpec(resize="squash", interpolation="bicubic", mean=_HALF, std=_HALF)
FAMILIES: dict[str, Family] = {
    "clip": Family("clip", ("en",), "clip-bpe", TextSpec(context_length=77, padding="longest", lower_case=True,
                                                          clean="whitespace", pad_id=0), _CLIP_IMAGE, _CLIP_PRESETS),
    # The text tower pools the last position, so texts are padded to the full 64 tokens as in training
    # (with "</s>", id 1); SiglipTokenizer lower-cases and drops punctuation ("canonicalize").
    "siglip": Family("siglip", ("en",), "siglip", TextSpec(context_length=64, padding="max_length", lower_case=True,
                                                           clean="canonicalize", pad_id=1),
                     _SIGLIP_IMAGE, _SIGLIP_PRESETS),
    # SigLIP 2 (fixed resolution, SiglipModel): Gemma's vocabulary (<pad> 0), trained on lower-cased text.
    "siglip2": Family("siglip2", ("multilingual",), "siglip2",
                      TextSpec(context_length=64, padding="max_length", lower_case=True, clean="whitespace",
                               pad_id=0), _SIGLIP_IMAGE, _SIGLIP2_PRESETS),
    # M-CLIP: XLM-R (<pad> 1), mean-pooled over the attention mask, projected into a CLIP image tower's space.
    "mclip": Family("mclip", ("multilingual",), "xlmr",
                    TextSpec(context_length=77, padding="longest", lower_case=False, clean="none", pad_id=1,
                             attention_mask=True), _CLIP_IMAGE, {
                        "tiny": Shape(dict(_TINY, patch_size=32), dict(_TINY), 512, 224, real=False),
                        "xlmr-base-vit-b-32": Shape(dict(_B, patch_size=32), dict(_B), 512, 224, real=True,
                                                    text_vocab=250002)}),
}


def family(name: str) -> Family:
    """A family by name; ExportError for an unknown one."""
    if name not in FAMILIES:
        raise ExportError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def shape(fam: Family, preset: str) -> Shape:
    """A family's preset; "real" names the family's first real-size preset."""
    if preset == "real":
        preset = next(name for name, s in fam.presets.items() if s.real)
    if preset not in fam.presets:
        raise ExportError(f"{fam.name} has no preset {preset!r}; choose one of real, {', '.join(fam.presets)}")
    return fam.presets[preset]


def preset_name(fam: Family, preset: str) -> str:
    """The preset's own name ("real" resolved)."""
    return next(name for name, s in fam.presets.items() if s is shape(fam, preset))


def _clip_vision_config(s: Shape) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**s.vision, image_size=s.image_size, hidden_act="quick_gelu",
                            initializer_factor=CLIP_INIT, projection_dim=s.dim)


def _build(fam: Family, s: Shape, text_vocab: int) -> Any:
    """The family's PyTorch model (random weights from the current torch seed)."""
    if fam.name == "clip":
        from transformers import CLIPConfig, CLIPModel

        text = dict(s.text, vocab_size=CLIP_VOCAB, max_position_embeddings=77, hidden_act="quick_gelu",
                    bos_token_id=SOT, eos_token_id=EOT, pad_token_id=1, initializer_factor=CLIP_INIT)
        return CLIPModel(CLIPConfig(text_config=text, vision_config=_clip_vision_config(s).to_dict(),
                                    projection_dim=s.dim))
    if fam.name in ("siglip", "siglip2"):
        from transformers import SiglipConfig, SiglipModel

        text = dict(s.text, vocab_size=text_vocab, max_position_embeddings=fam.context_length,
                    projection_size=s.dim, pad_token_id=1, bos_token_id=None, eos_token_id=1)
        return SiglipModel(SiglipConfig(text_config=text,
                                         vision_config=dict(s.vision, image_size=s.image_size)))
    import torch
    from transformers import CLIPVisionModelWithProjection, XLMRobertaConfig, XLMRobertaModel

    class MClip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            config = XLMRobertaConfig(**s.text, vocab_size=text_vocab, max_position_embeddings=514,
                                      type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                      initializer_range=XLMR_INIT)
            self.transformer = XLMRobertaModel(config, add_pooling_layer=False)
            self.projection = torch.nn.Linear(s.text["hidden_size"], s.dim)
            self.vision = CLIPVisionModelWithProjection(_clip_vision_config(s))

    return MClip()


def random_model(name: str, preset: str, seed: int = 0, text_vocab: int | None = None) -> Any:
    """A family's model with seeded random weights; text_vocab overrides the real vocabulary size."""
    import torch

    fam = family(name)
    s = shape(fam, preset)
    vocab = text_vocab or s.text_vocab or TINY_VOCAB
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(fam, s, vocab)
    return model.eval()


def towers(name: str, model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Image and text towers of a family's model, L2-normalised, in the bundle's graph interface."""
    import torch
    from torch.nn.functional import normalize

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            if name == "clip":
                out = self.model.visual_projection(self.model.vision_model(pixel_values=pixel_values).pooler_output)
            elif name == "mclip":
                out = self.model.vision(pixel_values=pixel_values).image_embeds
            else:  # SigLIP: the attention-pooling head's output is the embedding, no projection
                out = self.model.vision_model(pixel_values=pixel_values).pooler_output
            return normalize(out, dim=-1)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            if name == "clip":
                out = self.model.text_projection(self.model.text_model(input_ids=input_ids).pooler_output)
            else:  # SigLIP: the head on the last position's state
                out = self.model.text_model(input_ids=input_ids).pooler_output
            return normalize(out, dim=-1)

    class MaskedTextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            states = self.model.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1)  # M-CLIP's mean over real tokens
            return normalize(self.model.projection(pooled), dim=-1)

    text: torch.nn.Module = MaskedTextTower() if name == "mclip" else TextTower()
    return ImageTower().eval(), text.eval()
