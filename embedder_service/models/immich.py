"""immich's published ONNX models (hub repositories immich-app/<model>) as bundles, without torch.

The layout, as immich's machine-learning service reads it (immich_ml/models/clip/*.py) and its exporter
writes it (export/immich_model_exporter, open_clip models):
    config.json                   open_clip's model config: embed_dim, vision_cfg.image_size,
                                  text_cfg.context_length, text_cfg.tokenizer_kwargs.clean
    visual/model.onnx             image f32[1,3,S,S] -> embedding f32[1,D] (L2-normalized; batch fixed at 1)
    visual/preprocess_cfg.json    size, mean, std, interpolation, resize_mode ("shortest" | "squash")
    textual/model.onnx            text i32[1,L] -> embedding, or input_ids and attention_mask i32[1,L] (M-CLIP)
    textual/tokenizer.json        Hugging Face tokenizers file; textual/tokenizer_config.json names pad_token
immich pads every text to the context length with that pad token, so these bundles do too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import onnx

from embedder_service.models import bundle as bundles
from embedder_service.models.bundle import Bundle, BundleError, ImageSpec, TextSpec

VISUAL, TEXTUAL = "visual/model.onnx", "textual/model.onnx"
CONFIG, PREPROCESS = "config.json", "visual/preprocess_cfg.json"
TOKENIZER, TOKENIZER_CONFIG = "textual/tokenizer.json", "textual/tokenizer_config.json"
REQUIRED = (VISUAL, TEXTUAL, CONFIG, PREPROCESS, TOKENIZER)
RESIZE_MODES = {"shortest": "shortest_edge_center_crop", "squash": "squash"}
MULTILINGUAL = ("xlm-roberta", "nllb", "multilingual")


def is_layout(files: set[str]) -> bool:
    """Whether a repository's file list looks like immich's layout."""
    return VISUAL in files and TEXTUAL in files


def wanted(files: set[str]) -> list[str]:
    """The files a bundle needs: the required ones, the tokenizer config, external weights of the graphs."""
    extra = {TOKENIZER_CONFIG} | {name for name in files
                                  if name.startswith((f"{VISUAL}_data", f"{VISUAL}.data",
                                                      f"{TEXTUAL}_data", f"{TEXTUAL}.data"))}
    return sorted(name for name in files if name in REQUIRED or name in extra)


def _json(repo: Path, name: str) -> dict[str, Any]:
    path = repo / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (immich layout needs {', '.join(REQUIRED)})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def image_spec(cfg: dict[str, Any], where: str) -> ImageSpec:
    """The bundle's image section from open_clip's preprocess_cfg.json."""
    size = cfg.get("size")
    if isinstance(size, list) and len(set(size)) == 1:
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise BundleError(f"{where}: field size: expected one square size, got {cfg.get('size')!r}")
    mode = cfg.get("resize_mode", "shortest")  # open_clip's default for older configs, as immich reads it
    if mode not in RESIZE_MODES:
        raise BundleError(f"{where}: field resize_mode: unknown {mode!r} (known: {', '.join(RESIZE_MODES)})")
    interpolation = str(cfg.get("interpolation", "bicubic")).lower()
    if interpolation not in bundles.INTERPOLATIONS:
        raise BundleError(f"{where}: field interpolation: unknown {interpolation!r} "
                          f"(known: {', '.join(bundles.INTERPOLATIONS)})")
    try:
        mean = bundles.channels(cfg.get("mean", bundles.CLIP_MEAN), "mean")
        std = bundles.channels(cfg.get("std", bundles.CLIP_STD), "std")
    except (BundleError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: field mean/std: {exc}") from None
    return ImageSpec(size=size, resize=RESIZE_MODES[mode], interpolation=interpolation, mean=mean, std=std)


def _graph_io(path: Path) -> tuple[list[str], list[str], int | None]:
    """Input names, output names, and the fixed sequence length of the first input (None when dynamic)."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    fixed = dims[-1].dim_value if len(dims) == 2 and dims[-1].HasField("dim_value") else None
    return [v.name for v in inputs], [v.name for v in model.graph.output], fixed


def family_of(name: str) -> tuple[str, tuple[str, ...]]:
    """Family and languages from an immich model name (ViT-B-32__openai, XLM-Roberta-Large-Vit-B-16Plus...)."""
    lower = name.lower()
    languages = ("multilingual",) if any(m in lower for m in MULTILINGUAL) else ("en",)
    if "siglip2" in lower:
        return "siglip2", languages
    if "siglip" in lower:
        return "siglip", languages
    if "xlm-roberta" in lower:
        return "xlm-roberta-clip", languages
    return "clip", languages


def bundle_from_immich(repo_dir: str | Path, out_dir: str | Path, name: str, source: str) -> Bundle:
    """Turn a local copy of an immich model repository into a checked bundle."""
    from embedder_service.models.hub import normalize_image_graph, normalize_text_graph
    from embedder_service.models.verify import verify_bundle
    from embedder_service.tokenizer import TextTokenizer

    repo, out = Path(repo_dir), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} already exists and is not empty; choose a new directory")
    for needed in REQUIRED:
        if not (repo / needed).is_file():
            raise BundleError(f"{repo / needed}: missing (immich layout needs {', '.join(REQUIRED)})")
    config = _json(repo, CONFIG)
    image = image_spec(_json(repo, PREPROCESS), str(repo / PREPROCESS))
    text_cfg = config.get("text_cfg") or {}
    clean = "canonicalize" if (text_cfg.get("tokenizer_kwargs") or {}).get("clean") == "canonicalize" else "whitespace"
    text_inputs, text_outputs, fixed_length = _graph_io(repo / TEXTUAL)
    _, image_outputs, _ = _graph_io(repo / VISUAL)
    context = int(text_cfg.get("context_length") or fixed_length or 77)
    if fixed_length and fixed_length != context:
        raise BundleError(f"{repo / CONFIG}: field text_cfg.context_length is {context}, but {TEXTUAL} takes "
                          f"{fixed_length} tokens")
    ids_name = "text" if "text" in text_inputs else "input_ids"
    with bundles.staged(out) as staging:
        # Their graphs have one output each (the normalized embedding), whatever it is called.
        said = config.get("embed_dim")
        dims = {normalize_image_graph(repo / VISUAL, staging / bundles.IMAGE_FILE, output=image_outputs[0]),
                normalize_text_graph(repo / TEXTUAL, staging / bundles.TEXT_FILE, ids_name=ids_name,
                                     output=text_outputs[0], keep_mask=True),
                int(said) if isinstance(said, int) else 0} - {0}
        if len(dims) != 1:
            raise BundleError(f"{repo / CONFIG}: field embed_dim: the graphs and config disagree ({sorted(dims)})")
        shutil.copyfile(repo / TOKENIZER, staging / bundles.TOKENIZER_FILE)
        bundles.check_tokenizer_file(staging / bundles.TOKENIZER_FILE)
        text = TextSpec(context_length=context, padding="max_length", lower_case=False, clean=clean,
                        pad_id=_pad_id(repo, staging / bundles.TOKENIZER_FILE),
                        attention_mask="attention_mask" in text_inputs)
        family, languages = family_of(name)
        found = Bundle(name=name, source=source, dim=dims.pop(), family=family, languages=languages, image=image,
                       text=text, path=staging, extra={"converted_from": "immich layout"})
        TextTokenizer.of(found)  # the tokenizer loads
        verify_bundle(found)  # both graphs run on our inputs: shapes, batch of 1 vs 3, padding
        bundles.save(found)
    return bundles.load(out)


def _pad_id(repo: Path, tokenizer: Path) -> int:
    """The id of tokenizer_config.json's pad_token, as immich pads; 0 when the repository names none."""
    from tokenizers import Tokenizer

    config_path = repo / TOKENIZER_CONFIG
    pad = _json(repo, TOKENIZER_CONFIG).get("pad_token") if config_path.is_file() else None
    if isinstance(pad, dict):  # older transformers write {"content": "<pad>", ...}
        pad = pad.get("content")
    if pad is None:
        return 0
    found = Tokenizer.from_file(str(tokenizer)).token_to_id(str(pad))
    if found is None:
        raise BundleError(f"{config_path}: field pad_token: {pad!r} is not in {TOKENIZER}")
    return int(found)
