"""Model bundles: a directory with model.json, image.onnx, text.onnx and the BPE vocabulary."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

Channels = tuple[float, float, float]  # one value per channel: R, G, B
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
MANIFEST = "model.json"
# Graph interface every bundle honours.
IMAGE_INPUT, IMAGE_OUTPUT = "pixel_values", "image_embeds"  # float32 [N,3,S,S] -> [N,D]
TEXT_INPUT, TEXT_OUTPUT = "input_ids", "text_embeds"  # int64 [N,L], L <= context -> [N,D]


class BundleError(Exception):
    """A bundle directory is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class Bundle:
    """What model.json says about a bundle, plus where it lives."""

    name: str
    source: str
    dim: int
    image_size: int
    context_length: int = 77
    precision: str = "fp32"
    mean: Channels = CLIP_MEAN
    std: Channels = CLIP_STD
    # The reference CLIP rule: shortest side to image_size (bicubic), then a centre crop.
    resize: str = "shortest_edge_bicubic_center_crop"
    semantic: bool = True
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # how the bundle was made, as JSON values
    path: Path = Path(".")

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def image_onnx(self) -> Path:
        return self.path / IMAGE_FILE

    @property
    def text_onnx(self) -> Path:
        return self.path / TEXT_FILE

    @property
    def vocab(self) -> Path:
        return self.path / VOCAB_FILE


def channels(values: Iterable[Any], what: str) -> Channels:
    """A per-channel setting (mean, std) as three floats, R G B; BundleError for any other count."""
    found = tuple(float(v) for v in values)
    if len(found) != 3:
        raise BundleError(f"{what} needs 3 values (one per RGB channel), got {len(found)}")
    return found


def load(path: str | Path) -> Bundle:
    """Read and check a bundle directory."""
    root = Path(path)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise BundleError(f"{root} is not a model bundle: {MANIFEST} is missing")
    try:
        data = json.loads(manifest.read_text())
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        bundle = Bundle(**data, path=root)
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{manifest} is malformed: {exc}") from exc
    for needed in (bundle.image_onnx, bundle.text_onnx, bundle.vocab):
        if not needed.is_file():
            raise BundleError(f"{root} is incomplete: {needed.name} is missing")
    return bundle


def save(bundle: Bundle) -> Bundle:
    """Write model.json with a version hash of the graphs and settings; returns the saved bundle."""
    stamped = replace(bundle, version=compute_version(bundle))
    data = asdict(stamped)
    data.pop("path")
    (bundle.path / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
    return stamped


def compute_version(bundle: Bundle) -> str:
    """First 12 hex digits of a sha256 over the graph files, the vocabulary and the settings."""
    digest = hashlib.sha256()
    for part in (bundle.image_onnx, bundle.text_onnx, bundle.vocab):
        with part.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    settings = asdict(bundle)
    for volatile in ("path", "version", "extra"):
        settings.pop(volatile)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]
