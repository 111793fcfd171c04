"""Export CLIP towers to ONNX bundles with torch: random weights (tests, benchmarks) or real checkpoints.

torch, transformers and open_clip are imported inside the functions that need them, so the model CLI can
download, quantize and describe bundles on machines without torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedder_service.models import bundle as bundles
from embedder_service.models.bundle import CLIP_MEAN, CLIP_STD, VOCAB_FILE, Bundle, Channels, ImageSpec, TextSpec
from embedder_service.models.verify import EOT, SOT, ExportError, example_inputs, verify_bundle

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

OPSET = 17
VOCAB_SIZE = 49408
# The shared reference material sits beside the repository: <repo>/../shared/clip/.
SHARED_VOCAB = Path(__file__).resolve().parents[3] / "shared" / "clip" / VOCAB_FILE
PRECISIONS = ("fp32", "int8", "fp16")

_TINY_TOWER = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
PRESETS: dict[str, dict[str, Any]] = {
    # Exactly the shape of openai/clip-vit-base-patch32.
    "vit-b-32": {
        "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "patch_size": 32, "image_size": 224},
        "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                        "num_attention_heads": 8},
    },
    # Production image size, vocabulary and embedding width on two thin layers: builds in a second.
    "tiny": {
        "vision_config": dict(_TINY_TOWER, patch_size=32, image_size=224),
        "text_config": dict(_TINY_TOWER),
    },
}
# transformers' default init (factor 1) gives a near-constant image embedding: attention is almost
# uniform, so the pooled class token barely sees the patches (mean cosine 0.98-0.99 between unrelated
# random images, measured on both presets). Factor 4 sharpens attention and brings it to 0.4-0.85 for
# images and texts, so the fp32 and int8 fidelity checks compare vectors that depend on the input.
INIT_SCALE = 4.0


def _require_torch() -> None:
    """Fail with an install hint when the export extra is missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"exporting needs torch and transformers ({exc.name} is missing): pip install -e '.[export]'"
        ) from exc


def find_vocab(explicit: str | Path | None = None) -> Path:
    """The CLIP BPE vocabulary: an explicit path, the shared copy, or open_clip's packaged one."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ExportError(f"vocabulary file {path} does not exist")
        return path
    if SHARED_VOCAB.is_file():
        return SHARED_VOCAB
    try:
        from open_clip.tokenizer import default_bpe

        return Path(default_bpe())
    except ImportError:
        pass
    raise ExportError(
        f"no CLIP vocabulary found: pass one ({VOCAB_FILE}), place it at {SHARED_VOCAB}, "
        "or install open_clip_torch, which ships it"
    )


def clip_config(preset: str) -> Any:
    """The transformers CLIPConfig of a preset (quick_gelu, vocabulary 49408, context 77, dim 512)."""
    if preset not in PRESETS:
        raise ExportError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    from transformers import CLIPConfig

    shape = PRESETS[preset]
    text = dict(shape["text_config"], vocab_size=VOCAB_SIZE, max_position_embeddings=77, hidden_act="quick_gelu",
                bos_token_id=SOT, eos_token_id=EOT, pad_token_id=1, initializer_factor=INIT_SCALE)
    vision = dict(shape["vision_config"], hidden_act="quick_gelu", initializer_factor=INIT_SCALE)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)


def random_clip(preset: str, seed: int = 0) -> Any:
    """A transformers CLIPModel with deterministic random weights (the reference for a random bundle)."""
    _require_torch()
    import torch
    from transformers import CLIPModel

    config = clip_config(preset)
    # fork_rng keeps the caller's global RNG untouched while making the init depend on the seed only.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval()  # type: ignore[no-untyped-call]  # transformers leaves PreTrainedModel.eval unannotated


def hf_towers(model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Image and text towers of a transformers CLIPModel with the bundle's graph interface."""
    import torch

    # transformers 5 returns output objects from get_*_features; calling the submodules keeps the
    # traced graph to exactly the tensors we need.
    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision, self.projection = model.vision_model, model.visual_projection

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            embeds: torch.Tensor = self.projection(self.vision(pixel_values=pixel_values).pooler_output)
            return embeds

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text, self.projection = model.text_model, model.text_projection

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            # pooler_output is the final-norm state at the (first) eot token, as in get_text_features.
            embeds: torch.Tensor = self.projection(self.text(input_ids=input_ids).pooler_output)
            return embeds

    return ImageTower().eval(), TextTower().eval()


def open_clip_towers(model: Any, context_length: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Image and text towers of an open_clip model, through its own encode_image / encode_text."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            embeds: torch.Tensor = self.model.encode_image(pixel_values)
            return embeds

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            # open_clip adds a positional embedding and causal mask of fixed context length, so the graph
            # pads shorter input with 0 itself, exactly as open_clip's tokenizer would.
            padded = torch.nn.functional.pad(input_ids, (0, context_length - input_ids.shape[1]), value=0)
            embeds: torch.Tensor = self.model.encode_text(padded)
            return embeds

    return ImageTower().eval(), TextTower().eval()


def _onnx_export(module: torch.nn.Module, example: np.ndarray, path: Path, names: tuple[str, str],
                 axes: dict[int, str]) -> None:
    """Trace one tower into an ONNX file with dynamic batch (and sequence) axes."""
    import torch

    # The TorchScript exporter (dynamo=False) needs nothing beyond torch; the dynamo one would pull in
    # onnxscript. Tracer warnings are about Python-level shape checks; the checks after export prove
    # that batch and sequence stay dynamic.
    with warnings.catch_warnings(), torch.no_grad():
        # torch.jit re-exports TracerWarning but leaves it out of its __all__.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*aten::index operator.*")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(module, (torch.from_numpy(example),), str(path), input_names=[names[0]],
                          output_names=[names[1]], dynamic_axes={names[0]: axes, names[1]: {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _torch_fn(module: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy-in, numpy-out call of a tower, for comparisons."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = module(torch.from_numpy(x)).numpy()
        return out

    return run


def _refuse_occupied(out_dir: str | Path) -> Path:
    """Refuse an output directory that already has content (bundles are never overwritten)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not empty; choose a new directory")
    return out


def _fresh_dir(out_dir: str | Path) -> Path:
    """Create the output directory, refusing one that already has content."""
    out = _refuse_occupied(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_bundle(towers: tuple[torch.nn.Module, torch.nn.Module], out_dir: str | Path, meta: Bundle,
                 vocab: Path) -> Bundle:
    """Export both towers into out_dir with the tokenizer (vocab: a tokenizer.json, copied, or CLIP's BPE
    vocabulary, turned into one), check them against torch, save model.json."""
    import torch
    import transformers

    from embedder_service.tokenizer import write_clip_tokenizer

    out = _fresh_dir(out_dir)
    started = time.perf_counter()
    pixels, ids = example_inputs(2, meta.image_size, meta.context_length)
    _onnx_export(towers[0], pixels, out / bundles.IMAGE_FILE, (bundles.IMAGE_INPUT, bundles.IMAGE_OUTPUT),
                 {0: "batch"})
    _onnx_export(towers[1], ids, out / bundles.TEXT_FILE, (bundles.TEXT_INPUT, bundles.TEXT_OUTPUT),
                 {0: "batch", 1: "sequence"})
    if vocab.suffix == ".json":
        shutil.copyfile(vocab, out / bundles.TOKENIZER_FILE)
    else:
        write_clip_tokenizer(vocab, out / bundles.TOKENIZER_FILE)
    exported = replace(meta, path=out, extra={
        **meta.extra, "exporter": f"torch.onnx TorchScript (dynamo=False), opset {OPSET}",
        "torch": torch.__version__, "transformers": transformers.__version__})
    verify_bundle(exported, _torch_fn(towers[0]), _torch_fn(towers[1]))
    saved = bundles.save(exported)
    log.info("exported %s to %s in %.1fs", saved.model_id, out, time.perf_counter() - started)
    return saved


def build_random_bundle(out_dir: str | Path, preset: str, seed: int = 0, vocab: str | Path | None = None) -> Bundle:
    """A bundle of a random-weight CLIP of a preset's shape: not semantic, for tests and benchmarks."""
    _refuse_occupied(out_dir)
    _require_torch()
    vocab_path = find_vocab(vocab)
    model = random_clip(preset, seed)
    meta = Bundle(name=f"random-{preset}", source=f"random:{preset}:seed{seed}",
                  dim=model.config.projection_dim, image=ImageSpec(size=model.config.vision_config.image_size),
                  text=TextSpec(context_length=model.config.text_config.max_position_embeddings), semantic=False,
                  extra={"preset": preset, "seed": seed, "init_scale": INIT_SCALE})
    return write_bundle(hf_towers(model), out_dir, meta, vocab_path)


def _source_key() -> str:
    """A hash of the code and library versions that make bundles, so cached ones follow any change."""
    digest = hashlib.sha256()
    for name in ("export.py", "verify.py", "quantize.py"):
        digest.update(Path(__file__).with_name(name).read_bytes())
    # A new transformers may initialize differently, a new exporter or quantizer write other graphs.
    for package in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            digest.update(f"{package}=={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()[:12]


def cached_random_bundle(cache_root: str | Path, preset: str, precision: str = "fp32") -> Path:
    """Path of a random bundle under cache_root, built on first use; safe when processes race."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    root = Path(cache_root)
    final = root / f"{preset}-{precision}-{_source_key()}"
    if (final / bundles.MANIFEST).is_file():
        bundles.load(final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the final place and rename: a directory rename is atomic, and a loser of a race
    # finds the winner's complete bundle instead of a half-written one.
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        if precision == "fp32":
            build_random_bundle(staging / "bundle", preset)
        else:
            from embedder_service.models import quantize

            source = cached_random_bundle(root, preset, "fp32")
            convert = quantize.make_int8 if precision == "int8" else quantize.make_fp16
            convert(source, staging / "bundle")
        try:
            os.rename(staging / "bundle", final)
        except OSError:
            if not (final / bundles.MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune_stale(root, final)
    return final


def _prune_stale(root: Path, current: Path) -> None:
    """Remove cached bundles of the same preset and precision built by older code (they are large)."""
    prefix = current.name.rsplit("-", 1)[0] + "-"
    for old in root.iterdir():
        if old != current and old.name.startswith(prefix) and len(old.name) == len(current.name):
            shutil.rmtree(old, ignore_errors=True)


def _preprocessor_config(checkpoint: str | Path) -> dict[str, Any] | None:
    """preprocessor_config.json of a local or hub transformers checkpoint, if it has one."""
    local = Path(checkpoint)
    if local.is_dir():
        path = local / "preprocessor_config.json"
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        downloaded = Path(hf_hub_download(str(checkpoint), "preprocessor_config.json"))
        config: dict[str, Any] = json.loads(downloaded.read_text())
        return config
    except Exception as exc:  # a missing optional file of any kind of repo
        log.warning("no preprocessor_config.json for %s (%s); assuming CLIP defaults", checkpoint, exc)
        return None


def export_transformers(checkpoint: str | Path, out_dir: str | Path, vocab: str | Path | None = None) -> Bundle:
    """Export a transformers CLIP checkpoint (local directory or hub id) to a bundle."""
    _refuse_occupied(out_dir)
    _require_torch()
    from transformers import CLIPModel

    from embedder_service.models import hub

    model = CLIPModel.from_pretrained(str(checkpoint)).eval()  # type: ignore[no-untyped-call]  # unannotated in transformers
    if model.config.text_config.vocab_size != VOCAB_SIZE:
        raise ExportError(f"{checkpoint} has a text vocabulary of {model.config.text_config.vocab_size} tokens; "
                          f"bundles use the CLIP BPE tokenizer ({VOCAB_SIZE})")
    image_size, mean, std = hub.preprocess_from_config(_preprocessor_config(checkpoint) or {},
                                                       model.config.vision_config.image_size)
    merges = Path(checkpoint) / "merges.txt"
    out = _fresh_dir(out_dir)
    vocab_path = find_vocab(vocab) if vocab is not None or not merges.is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        if vocab_path is None:
            vocab_path = Path(tmp) / VOCAB_FILE
            hub.vocab_from_merges(merges, vocab_path)
        meta = Bundle(name=Path(str(checkpoint).rstrip("/")).name, source=f"hf:{checkpoint}",
                      dim=model.config.projection_dim, image=ImageSpec(size=image_size, mean=mean, std=std),
                      text=TextSpec(context_length=model.config.text_config.max_position_embeddings))
        return write_bundle(hf_towers(model), out, meta, vocab_path)


def export_open_clip(model_name: str, pretrained: str, out_dir: str | Path) -> Bundle:
    """Export an open_clip model (e.g. ViT-B-32 / laion2b_s34b_b79k) to a bundle; needs open_clip_torch."""
    _refuse_occupied(out_dir)
    _require_torch()
    try:
        import open_clip
    except ImportError as exc:
        raise ExportError("exporting open_clip models needs the optional open_clip_torch package "
                          "(pip install -e '.[openclip]'; it pulls torchvision)") from exc
    import torch

    model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    # Bundles carry the CLIP BPE vocabulary and the service tokenizes with OpenAI's text cleaning
    # (ftfy, whitespace, lower case); other tokenizers or cleaning modes would silently change ids.
    lower = getattr(open_clip.tokenizer, "_clean_lower", None)
    if not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) or (
            lower is not None and getattr(tokenizer, "clean_fn", lower) is not lower):
        raise ExportError(f"{model_name} tokenizes differently ({type(tokenizer).__name__}); bundles support "
                          "the CLIP BPE tokenizer with lower-case cleaning only")
    image_size, mean, std = _open_clip_preprocess(open_clip, model)
    context_length = int(getattr(model, "context_length", None) or tokenizer.context_length)
    with torch.no_grad():
        dim = int(model.encode_image(torch.zeros(1, 3, image_size, image_size)).shape[-1])
    meta = Bundle(name=f"open_clip-{model_name}-{pretrained}", source=f"open_clip:{model_name}:{pretrained}",
                  dim=dim, image=ImageSpec(size=image_size, mean=mean, std=std),
                  text=TextSpec(context_length=context_length),
                  extra={"open_clip": getattr(open_clip, "__version__", "?")})
    return write_bundle(open_clip_towers(model, context_length), out_dir, meta,
                        Path(open_clip.tokenizer.default_bpe()))


def _open_clip_preprocess(open_clip: Any, model: Any) -> tuple[int, Channels, Channels]:
    """Image size, mean and std from an open_clip model's preprocess config; refuses other resize rules."""
    getter = getattr(open_clip, "get_model_preprocess_cfg", None)
    cfg = dict(getter(model)) if getter else {}
    visual = model.visual
    size = cfg.get("size", getattr(visual, "image_size", 224))
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise ExportError(f"non-square input size {size} is not supported")
        size = size[0]
    # Bundles know one rule: shortest side to size (bicubic), then centre crop: open_clip's default.
    rule = (cfg.get("interpolation", "bicubic"), cfg.get("resize_mode", "shortest"))
    if rule != ("bicubic", "shortest"):
        raise ExportError(f"preprocessing {rule} differs from the bundle's shortest-side bicubic + centre crop")
    mean = bundles.channels(cfg.get("mean", getattr(visual, "image_mean", None) or CLIP_MEAN), "mean")
    std = bundles.channels(cfg.get("std", getattr(visual, "image_std", None) or CLIP_STD), "std")
    return int(size), mean, std


def reference_features(model: Any, pixels: np.ndarray | None = None, ids: np.ndarray | None = None) -> np.ndarray:
    """transformers' own get_image_features / get_text_features as numpy: the independent reference."""
    import torch

    with torch.no_grad():
        if pixels is not None:
            out = model.get_image_features(pixel_values=torch.from_numpy(pixels))
        elif ids is not None:
            out = model.get_text_features(input_ids=torch.from_numpy(ids))
        else:
            raise ValueError("give pixels or ids")
    # transformers 4 returns the tensor, 5 an output object whose pooler_output is the projection.
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()

