"""Known ready-made models: what `models list` prints and what `models download --repo NAME` resolves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    """One downloadable model, as its publisher describes it (size: the fp32 ONNX files, approximate)."""

    name: str
    family: str
    dim: int
    image_size: int
    languages: str
    size_mb: int | None  # None: not measured yet
    repo: str  # Hugging Face hub repository; its layout (transformers.js or immich) is told on arrival


# Sizes are approximate (parameters x 4 bytes) until a measured download replaces them.
KNOWN: tuple[Known, ...] = (
    Known("clip-vit-base-patch32", "clip", 512, 224, "en", 605, "Xenova/clip-vit-base-patch32"),
    Known("ViT-B-32__openai", "clip", 512, 224, "en", 605, "immich-app/ViT-B-32__openai"),
    Known("ViT-B-16__openai", "clip", 512, 224, "en", 600, "immich-app/ViT-B-16__openai"),
    Known("ViT-L-14__openai", "clip", 768, 224, "en", 1710, "immich-app/ViT-L-14__openai"),
    Known("ViT-B-16-SigLIP__webli", "siglip", 768, 224, "en", 815, "immich-app/ViT-B-16-SigLIP__webli"),
    Known("ViT-B-16-SigLIP-384__webli", "siglip", 768, 384, "en", 815, "immich-app/ViT-B-16-SigLIP-384__webli"),
    Known("ViT-SO400M-14-SigLIP-384__webli", "siglip", 1152, 384, "en", 3510,
          "immich-app/ViT-SO400M-14-SigLIP-384__webli"),
    Known("xlm-roberta-base-ViT-B-32__laion5b_s13b_b90k", "xlm-roberta-clip", 512, 224, "multilingual", 1470,
          "immich-app/xlm-roberta-base-ViT-B-32__laion5b_s13b_b90k"),
    Known("XLM-Roberta-Large-Vit-B-16Plus", "xlm-roberta-clip", 640, 240, "multilingual", None,
          "immich-app/XLM-Roberta-Large-Vit-B-16Plus"),
)


def find(name: str) -> Known | None:
    """A known model by its name (case-insensitive), or None."""
    return next((k for k in KNOWN if k.name.lower() == name.lower()), None)


def repo_of(name_or_repo: str) -> str:
    """A hub repository id: a known model's name becomes its repository; anything with a "/" is kept."""
    known = None if "/" in name_or_repo else find(name_or_repo)
    return known.repo if known else name_or_repo


def table() -> str:
    """The known models as a text table."""
    header = ("name", "family", "dim", "image", "languages", "download", "source")
    rows = [header] + [(k.name, k.family, str(k.dim), f"{k.image_size}px", k.languages,
                        f"~{k.size_mb} MB" if k.size_mb else "?", f"hf:{k.repo}") for k in KNOWN]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
