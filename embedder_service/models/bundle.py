"""Model bundles: a directory with model.json, image.onnx, text.onnx and the tokenizer.

Format 2 (model.json has "format": 2) describes any family: an "image" section (size, resize rule,
interpolation, mean, std) and a "text" section (tokenizer.json run by Hugging Face tokenizers, context
length, padding, lower-casing, clean-up, pad id, attention mask). Format 1 (no "format"; CLIP only, with
the BPE vocabulary file) still loads, mapped onto the same description.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

Channels = tuple[float, float, float]  # one value per channel: R, G, B
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FORMAT = 2
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"  # format 1's CLIP BPE vocabulary
TOKENIZER_FILE = "tokenizer.json"
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
MANIFEST = "model.json"
# Graph interface every bundle honours.
IMAGE_INPUT, IMAGE_OUTPUT = "pixel_values", "image_embeds"  # float32 [N,3,S,S] -> [N,D]
TEXT_INPUT, TEXT_OUTPUT = "input_ids", "text_embeds"  # int64 [N,L], L <= context -> [N,D]
TEXT_MASK = "attention_mask"  # optional int64 [N,L] input, 1 for tokens and 0 for padding
# Resize rules: the shortest side to size then a centre crop (CLIP), or both sides to size (SigLIP).
RESIZES = ("shortest_edge_center_crop", "squash")
INTERPOLATIONS = ("bicubic", "bilinear", "lanczos", "nearest")
# Padding: to the longest row of a batch (causal towers pooling at eot), or always to context_length
# (towers trained on fixed-length input, such as SigLIP).
PADDINGS = ("longest", "max_length")
# Text clean-up before tokenizing, as open_clip names it: "whitespace" = ftfy, HTML entities (twice) and
# whitespace collapsed (CLIP's, with lower_case); "canonicalize" = that, then punctuation removed and lower
# case (SigLIP's training text); "none" = the text as given.
CLEANUPS = ("whitespace", "canonicalize", "none")
_V1_RESIZE = "shortest_edge_bicubic_center_crop"


class BundleError(Exception):
    """A bundle directory is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes the image graph's input."""

    size: int = 224
    resize: str = "shortest_edge_center_crop"
    interpolation: str = "bicubic"
    mean: Channels = CLIP_MEAN
    std: Channels = CLIP_STD


@dataclass(frozen=True)
class TextSpec:
    """How a text becomes the text graph's input."""

    tokenizer: str = TOKENIZER_FILE  # file in the bundle; format 1 names its BPE vocabulary here
    context_length: int = 77
    padding: str = "longest"
    lower_case: bool = True
    clean: str = "whitespace"
    pad_id: int = 0
    attention_mask: bool = False  # whether text.onnx takes an attention_mask input


@dataclass(frozen=True)
class Bundle:
    """What model.json says about a bundle, plus where it lives."""

    name: str
    source: str
    dim: int
    family: str = "clip"
    languages: tuple[str, ...] = ("en",)
    image: ImageSpec = ImageSpec()
    text: TextSpec = TextSpec()
    precision: str = "fp32"
    semantic: bool = True
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # how the bundle was made, as JSON values
    format: int = FORMAT  # what model.json was read as (1 = mapped from the old layout)
    path: Path = Path(".")

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def image_size(self) -> int:
        return self.image.size

    @property
    def context_length(self) -> int:
        return self.text.context_length

    @property
    def mean(self) -> Channels:
        return self.image.mean

    @property
    def std(self) -> Channels:
        return self.image.std

    @property
    def image_onnx(self) -> Path:
        return self.path / IMAGE_FILE

    @property
    def text_onnx(self) -> Path:
        return self.path / TEXT_FILE

    @property
    def tokenizer(self) -> Path:
        return self.path / self.text.tokenizer

    @property
    def vocab(self) -> Path:
        """The tokenizer file (kept under its format-1 name for old callers)."""
        return self.tokenizer


def channels(values: Iterable[Any], what: str) -> Channels:
    """A per-channel setting (mean, std) as three floats, R G B; BundleError for any other count."""
    found = tuple(float(v) for v in values)
    if len(found) != 3:
        raise BundleError(f"{what} needs 3 values (one per RGB channel), got {len(found)}")
    return found


T = TypeVar("T")


class _Fields:
    """Reads a model.json section, raising BundleError that names the file and the field."""

    def __init__(self, where: str, data: Any, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise BundleError(f"{where}: field {prefix.rstrip('.') or '(top)'}: expected an object")
        self.where, self.data, self.prefix = where, data, prefix

    def fail(self, key: str, why: str) -> BundleError:
        return BundleError(f"{self.where}: field {self.prefix}{key}: {why}")

    def get(self, key: str, kind: Callable[[Any], T], default: T | None = None,
            choices: Iterable[T] = ()) -> T:
        if key not in self.data:
            if default is None:
                raise self.fail(key, "missing")
            return default
        raw = self.data[key]
        # bool is an int in Python; a JSON true is no image size.
        if kind in (int, float) and (isinstance(raw, bool) or not isinstance(raw, int | float)):
            raise self.fail(key, f"expected a number, got {raw!r}")
        if kind is int and raw != int(raw):
            raise self.fail(key, f"expected an integer, got {raw!r}")
        if kind is str and not isinstance(raw, str):
            raise self.fail(key, f"expected a string, got {raw!r}")
        if kind is bool and not isinstance(raw, bool):
            raise self.fail(key, f"expected true or false, got {raw!r}")
        try:
            value = kind(raw)
        except (TypeError, ValueError, BundleError) as exc:
            raise self.fail(key, str(exc)) from None
        allowed = list(choices)
        if allowed and value not in allowed:
            raise self.fail(key, f"unknown {value!r} (known: {', '.join(map(str, allowed))})")
        return value

    def positive(self, key: str, default: int | None = None) -> int:
        value = self.get(key, int, default)
        if value < 1:
            raise self.fail(key, f"must be at least 1, got {value}")
        return value

    def section(self, key: str) -> _Fields:
        return _Fields(self.where, self.data.get(key), f"{self.prefix}{key}.")


def _languages(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
        raise ValueError("expected a non-empty list of language codes")
    return tuple(raw)


def _from_v2(f: _Fields) -> dict[str, Any]:
    """Bundle fields from a format-2 model.json."""
    img, txt = f.section("image"), f.section("text")
    image = ImageSpec(size=img.positive("size"), resize=img.get("resize", str, choices=RESIZES),
                      interpolation=img.get("interpolation", str, choices=INTERPOLATIONS),
                      mean=img.get("mean", lambda v: channels(v, "mean")),
                      std=img.get("std", lambda v: channels(v, "std")))
    if any(s <= 0 for s in image.std):
        raise img.fail("std", "every value must be positive")
    text = TextSpec(tokenizer=txt.get("tokenizer", str), context_length=txt.positive("context_length"),
                    padding=txt.get("padding", str, choices=PADDINGS), lower_case=txt.get("lower_case", bool),
                    clean=txt.get("clean", str, choices=CLEANUPS), pad_id=txt.get("pad_id", int),
                    attention_mask=txt.get("attention_mask", bool, False))
    if text.context_length < 2:
        raise txt.fail("context_length", f"must leave room for start and end tokens, got {text.context_length}")
    if Path(text.tokenizer).name != text.tokenizer or not text.tokenizer.endswith(".json"):
        raise txt.fail("tokenizer", f"expected a tokenizer .json file name in the bundle, got {text.tokenizer!r}")
    return {"family": f.get("family", str), "languages": f.get("languages", _languages),
            "image": image, "text": text}


def _from_v1(f: _Fields) -> dict[str, Any]:
    """Bundle fields from a format-1 model.json (CLIP, BPE vocabulary), mapped onto format 2's."""
    f.get("resize", str, _V1_RESIZE, choices=(_V1_RESIZE,))
    image = ImageSpec(size=f.positive("image_size"), mean=f.get("mean", lambda v: channels(v, "mean"), CLIP_MEAN),
                      std=f.get("std", lambda v: channels(v, "std"), CLIP_STD))
    text = TextSpec(tokenizer=VOCAB_FILE, context_length=f.positive("context_length", 77))
    return {"family": "clip", "languages": ("en",), "image": image, "text": text}


def parse(data: Any, where: str = MANIFEST, path: Path = Path(".")) -> Bundle:
    """A Bundle from model.json's content (format 1 or 2); BundleError names the field that is wrong."""
    f = _Fields(where, data)
    version = f.get("format", int, 1)
    if version not in (1, FORMAT):
        raise f.fail("format", f"unknown bundle format {version} (this code reads 1 and {FORMAT})")
    fields = _from_v2(f) if version == FORMAT else _from_v1(f)
    extra: dict[str, Any] = f.get("extra", dict, {})
    return Bundle(name=f.get("name", str), source=f.get("source", str, ""), dim=f.positive("dim"),
                  precision=f.get("precision", str, "fp32", choices=("fp32", "fp16", "int8")),
                  semantic=f.get("semantic", bool, True), version=f.get("version", str, ""), extra=extra,
                  format=version, path=path, **fields)


def load(path: str | Path) -> Bundle:
    """Read and check a bundle directory: model.json's fields and that every file it names is there."""
    root = Path(path)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise BundleError(f"{root} is not a model bundle: {MANIFEST} is missing")
    try:
        data = json.loads(manifest.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest} is not valid JSON: {exc}") from exc
    bundle = parse(data, str(manifest), root)
    for needed, named_by in ((bundle.image_onnx, ""), (bundle.text_onnx, ""), (bundle.tokenizer, "text.tokenizer")):
        if not needed.is_file():
            by = f" (named by {MANIFEST} field {named_by})" if named_by and bundle.format == FORMAT else ""
            raise BundleError(f"{root} is incomplete: {needed.name} is missing{by}")
    if bundle.format == FORMAT:
        check_tokenizer_file(bundle.tokenizer)
    return bundle


def check_tokenizer_file(path: Path) -> None:
    """Refuse a tokenizer.json that tokenizers could not run: no model, or a model without vocabulary."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise BundleError(f"{path}: field model: missing (not a Hugging Face tokenizer.json)")
    if not model.get("vocab"):
        raise BundleError(f"{path}: field model.vocab: missing or empty")
    if model.get("type") == "BPE" and "merges" not in model:
        raise BundleError(f"{path}: field model.merges: missing (a BPE model needs its merges)")


def manifest(bundle: Bundle) -> dict[str, Any]:
    """model.json's content for a bundle, always in format 2."""
    data = asdict(bundle)
    for not_written in ("path", "format"):
        data.pop(not_written)
    return {"format": FORMAT, **data, "languages": list(bundle.languages)}


def save(bundle: Bundle) -> Bundle:
    """Write model.json (format 2) with a version hash of the graphs, tokenizer and settings."""
    if not bundle.text.tokenizer.endswith(".json"):
        raise BundleError(f"{bundle.path}: format {FORMAT} needs a tokenizer .json, not {bundle.text.tokenizer}")
    stamped = replace(bundle, version=compute_version(bundle), format=FORMAT)
    (bundle.path / MANIFEST).write_text(json.dumps(manifest(stamped), indent=2) + "\n")
    return stamped


def compute_version(bundle: Bundle) -> str:
    """First 12 hex digits of a sha256 over the graph files, the tokenizer and the settings."""
    digest = hashlib.sha256()
    for part in (bundle.image_onnx, bundle.text_onnx, bundle.tokenizer):
        with part.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    settings = manifest(bundle)
    for volatile in ("version", "extra"):
        settings.pop(volatile)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A folder beside `out` to write a bundle in; it becomes `out` when the block succeeds.

    A failure leaves no half bundle behind. `out` may already exist only as an empty folder.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is read by the service's own user
    try:
        yield staging
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
