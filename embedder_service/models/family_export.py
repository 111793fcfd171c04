"""Export a family's two towers to ONNX and check them, per row, against the PyTorch model (fp32 and int8)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from embedder_service.models import bundle as bundles
from embedder_service.models import families, vocab
from embedder_service.models.export import OPSET, find_vocab
from embedder_service.models.verify import EOT, SOT, ExportError, cosine_rows

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
    """The family's tokenizer file in out: tokenizer.json (trained small vocabulary) or CLIP's BPE file."""
    if fam.tokenizer == "clip-bpe":
        return Path(shutil.copyfile(find_vocab(), out / bundles.VOCAB_FILE))
    return vocab.write(fam.tokenizer, out / "tokenizer.json")


def text_feed(fam: families.Family, tokenizer: Path, texts: tuple[str, ...] = TEXTS) -> Feed:
    """Token ids (and mask) of texts as the family pads them; CLIP rows are random ids between sot and eot."""
    length = fam.context_length
    if fam.tokenizer == "clip-bpe":
        rng = np.random.default_rng(0)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            n = min(len(text.split()) * 2, length - 2)
            ids[row, 0], ids[row, 1 : n + 1], ids[row, n + 1] = SOT, rng.integers(1, SOT, n), EOT
        return {"input_ids": ids}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    encoded = [tok.encode(t.lower() if fam.lower_case else t).ids[:length] for t in texts]
    width = length if fam.padding == "max_length" else max(map(len, encoded))
    ids = np.full((len(texts), width), vocab.pad_id(fam.tokenizer, tok), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
    return {"input_ids": ids, "attention_mask": mask} if fam.attention_mask else {"input_ids": ids}


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


def export_towers(name: str, preset: str, out_dir: str | Path, seed: int = 0,
                  model: Any = None) -> dict[str, Any]:
    """Write image.onnx, text.onnx and the tokenizer of a random family model; check both towers in fp32."""
    fam = families.family(name)
    s = families.shape(fam, preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(fam, out)
    model = model if model is not None else families.random_model(name, preset, seed)
    image, text = families.towers(name, model)
    pix, ids = {"pixel_values": pixels(2, s.image_size)}, text_feed(fam, tokenizer, TEXTS[:2])
    _export(image, pix, out / bundles.IMAGE_FILE, bundles.IMAGE_OUTPUT)
    _export(text, ids, out / bundles.TEXT_FILE, bundles.TEXT_OUTPUT)
    worst = check(out, fam, s.image_size, image, text, FP32_FLOOR)
    return {"family": name, "preset": families.preset_name(fam, preset), "seed": seed, "dim": s.dim,
            "fp32_min_cosine": worst}


def check(out: Path, fam: families.Family, image_size: int, image: torch.nn.Module, text: torch.nn.Module,
          floor: float) -> dict[str, float]:
    """Worst per-row cosine of both graphs in out against the towers; ExportError below floor."""
    worst = {}
    for what, path, module, feed in (
            ("image", out / bundles.IMAGE_FILE, image, {"pixel_values": pixels(6, image_size, seed=1)}),
            ("text", out / bundles.TEXT_FILE, text, text_feed(fam, out / "tokenizer.json"))):
        worst[what] = float(compare(path, _reference(module), feed).min())
        if not worst[what] >= floor:
            raise ExportError(f"{fam.name} {what} tower: cosine {worst[what]:.6f} < {floor} against torch")
    return worst


def int8_towers(src: Path, dst: Path) -> None:
    """Quantize both graphs of src into dst as quantize.make_int8 does, and copy the tokenizer."""
    from embedder_service.models import quantize

    dst.mkdir(parents=True, exist_ok=True)
    for graph in (bundles.IMAGE_FILE, bundles.TEXT_FILE):
        quantize._int8_graph(src / graph, dst / graph)
    for extra in ("tokenizer.json", bundles.VOCAB_FILE):
        if (src / extra).is_file():
            shutil.copyfile(src / extra, dst / extra)


def _source_key() -> str:
    """A hash of the code that makes family exports and of the export's own key (library versions)."""
    import hashlib

    from embedder_service.models import export

    digest = hashlib.sha256(export._source_key().encode())
    for module in (families, vocab):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:12]


def cached_towers(cache_root: str | Path, name: str, preset: str = "tiny") -> Path:
    """fp32 and int8 (under int8/) towers of a family's seed-0 model, built once per code version."""
    import os
    import tempfile

    root = Path(cache_root)
    final = root / f"family-{name}-{preset}-{_source_key()}"
    if (final / "int8" / bundles.TEXT_FILE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Built beside the final place and renamed: a racing process finds a complete directory or none.
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        export_towers(name, preset, staging / "out")
        int8_towers(staging / "out", staging / "out" / "int8")
        try:
            os.rename(staging / "out", final)
        except OSError:
            if not (final / "int8" / bundles.TEXT_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
