"""Export a family's two towers to ONNX and check them, per row, against the PyTorch model (fp32 and int8)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from embedder_service.models import bundle as bundles
from embedder_service.models import families, vocab
from embedder_service.models.bundle import Bundle
from embedder_service.models.export import OPSET, _fresh_dir, find_vocab
from embedder_service.models.verify import ExportError, cosine_rows

if TYPE_CHECKING:
    import torch

FP32_FLOOR, INT8_FLOOR = 0.9999, 0.99
TEXTS = ("a photo of a cat", "two children playing football in a park at sunset", "ein hund am strand",
         "坐在木桌上的猫", "close up of a bee on a yellow flower", "a")
Feed = dict[str, NDArray[Any]]


def _export(module: torch.nn.Module, feed: Feed, path: Path, output: str) -> None:
    """Trace one tower into ONNX with dynamic batch (and sequence) axes."""
    import torch

    axes = {name: ({0: "batch"} if value.ndim == 4 else {0: "batch", 1: "sequence"}) for name, value in feed.items()}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(module, tuple(torch.from_numpy(v) for v in feed.values()), str(path),
                          input_names=list(feed), output_names=[output],
                          dynamic_axes={**axes, output: {0: "batch"}}, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)


def pixels(n: int, size: int, seed: int = 0) -> NDArray[np.float32]:
    """Half white noise, half blocky low-frequency images in the range of normalised photos."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n - n // 2, 3, size, size))
    block = size // 7 + 1
    coarse = rng.standard_normal((n // 2, 3, 7, 7))
    blocky = np.repeat(np.repeat(coarse, block, axis=2), block, axis=3)[:, :, :size, :size].clip(-1.8, 2.1)
    out: NDArray[np.float32] = np.concatenate([noise, blocky]).astype(np.float32)
    return out


def write_tokenizer(fam: families.Family, out: Path) -> Path:
    """The family's tokenizer.json in out: CLIP's from its BPE vocabulary, else a trained small vocabulary."""
    path = out / bundles.TOKENIZER_FILE
    if fam.tokenizer == "clip-bpe":
        from embedder_service.tokenizer import write_clip_tokenizer

        write_clip_tokenizer(find_vocab(), path)
        return path
    return vocab.write(fam.tokenizer, path)


def text_feed(found: Bundle, texts: tuple[str, ...] = TEXTS) -> Feed:
    """Token ids (and the attention mask where the tower takes it) of texts, as the service makes them."""
    from embedder_service.tokenizer import TextTokenizer

    tok = TextTokenizer.of(found)
    ids, mask = tok.pad([tok.tokenize(t)[0] for t in texts])
    return {"input_ids": ids, "attention_mask": mask} if found.text.attention_mask else {"input_ids": ids}


def _torch_run(module: torch.nn.Module, feed: Feed) -> NDArray[np.float32]:
    import torch

    with torch.no_grad():
        out: NDArray[np.float32] = module(*(torch.from_numpy(v) for v in feed.values())).numpy()
    return out


def _reference(module: torch.nn.Module) -> Callable[[Feed], NDArray[np.float32]]:
    return lambda feed: _torch_run(module, feed)


def _onnx_run(path: Path, feed: Feed) -> NDArray[np.float32]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: NDArray[np.float32] = session.run(None, feed)[0]
    return out


def compare(path: Path, reference: Callable[[Feed], NDArray[np.float32]], feed: Feed) -> NDArray[np.float64]:
    """Per-row cosine of a graph's output against the reference's."""
    return cosine_rows(_onnx_run(path, feed), reference(feed))


def family_bundle(name: str, preset: str, seed: int, path: Path) -> Bundle:
    """model.json's description of a random family bundle (not yet saved)."""
    fam = families.family(name)
    s = families.shape(fam, preset)
    full = families.preset_name(fam, preset)
    return Bundle(name=f"random-{name}-{full}", source=f"random:{name}:{full}:seed{seed}", dim=s.dim,
                  family=name, languages=fam.languages, image=replace(fam.image, size=s.image_size), text=fam.text,
                  semantic=False, path=path, extra={"preset": full, "seed": seed, "text_vocab": s.text_vocab})


def build_family_bundle(out_dir: str | Path, name: str, preset: str, seed: int = 0, model: Any = None) -> Bundle:
    """A format-2 bundle of a random family model; both towers checked per row against torch."""
    import torch
    import transformers

    out = _fresh_dir(out_dir)
    fam = families.family(name)
    write_tokenizer(fam, out)
    meta = family_bundle(name, preset, seed, out)
    model = model if model is not None else families.random_model(name, preset, seed)
    image, text = families.towers(name, model)
    _export(image, {"pixel_values": pixels(2, meta.image_size)}, out / bundles.IMAGE_FILE, bundles.IMAGE_OUTPUT)
    _export(text, text_feed(meta, TEXTS[:2]), out / bundles.TEXT_FILE, bundles.TEXT_OUTPUT)
    worst = check(meta, image, text, FP32_FLOOR)
    return bundles.save(replace(meta, extra={
        **meta.extra, "fp32_min_cosine": worst, "exporter": f"torch.onnx TorchScript (dynamo=False), opset {OPSET}",
        "torch": torch.__version__, "transformers": transformers.__version__}))


def check(found: Bundle, image: torch.nn.Module, text: torch.nn.Module, floor: float) -> dict[str, float]:
    """Worst per-row cosine of a bundle's graphs against the towers; ExportError below floor."""
    worst = {}
    for what, path, module, feed in (
            ("image", found.image_onnx, image, {"pixel_values": pixels(6, found.image_size, seed=1)}),
            ("text", found.text_onnx, text, text_feed(found))):
        worst[what] = float(compare(path, _reference(module), feed).min())
        if not worst[what] >= floor:
            raise ExportError(f"{found.family} {what} tower: cosine {worst[what]:.6f} < {floor} against torch")
    return worst


def _source_key() -> str:
    """A hash of the code that makes family exports and of the export's own key (library versions)."""
    import hashlib

    from embedder_service.models import export

    digest = hashlib.sha256(export._source_key().encode())
    for module in (families, vocab):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:12]


def cached_family_bundle(cache_root: str | Path, name: str, preset: str = "tiny", precision: str = "fp32") -> Path:
    """A seed-0 family bundle (fp32 or int8) under cache_root, built once per code version; safe in races."""
    import os
    import tempfile

    from embedder_service.models import quantize

    root = Path(cache_root)
    final = root / f"family-{name}-{preset}-{precision}-{_source_key()}"
    if (final / bundles.MANIFEST).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Built beside the final place and renamed: a racing process finds a complete bundle or none.
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        if precision == "fp32":
            build_family_bundle(staging / "out", name, preset)
        else:
            quantize.make_int8(cached_family_bundle(root, name, preset), staging / "out")
        try:
            os.rename(staging / "out", final)
        except OSError:
            if not (final / bundles.MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in root.glob(f"family-{name}-{preset}-{precision}-*"):
        if old != final:  # built by older code; real shapes take gigabytes
            shutil.rmtree(old, ignore_errors=True)
    return final
