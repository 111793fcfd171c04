"""Download a ready ONNX CLIP from the Hugging Face hub and normalize it to the bundle interface (no torch)."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from embedder_service.models import bundle as bundles
from embedder_service.models import immich
from embedder_service.models.bundle import CLIP_MEAN, CLIP_STD, Bundle, BundleError, Channels, ImageSpec, TextSpec
from embedder_service.models.verify import verify_bundle
from embedder_service.tokenizer import write_clip_tokenizer

log = logging.getLogger(__name__)

DEFAULT_REPO = "Xenova/clip-vit-base-patch32"
# What we assume of DEFAULT_REPO (the transformers.js layout; graphs exported by optimum from
# openai/clip-vit-base-patch32). It cannot be fetched from this workplace, so every assumption is checked
# on arrival and a mismatch is a clear error, never a silently wrong bundle:
#   onnx/vision_model.onnx  pixel_values f32[N,3,224,224] -> image_embeds f32[N,512], last_hidden_state
#   onnx/text_model.onnx    input_ids i64[N,L] (some exports: int32, or also attention_mask)
#                           -> text_embeds f32[N,512], last_hidden_state
#   merges.txt              the CLIP BPE merges under a "#version: 0.2" header
#   preprocessor_config.json, config.json   preprocessing and dimensions
IMAGE_SRC, TEXT_SRC, MERGES = "onnx/vision_model.onnx", "onnx/text_model.onnx", "merges.txt"
CONFIGS = ("preprocessor_config.json", "config.json")
# A few seconds: offline, the whole command should fail fast with advice, not hang.
TIMEOUT_S = 5.0
# CLIP's tokenizer uses the first 49152 - 256 - 2 merges of the file; the rest are never read.
N_MERGES = 48894
VOCAB_HEADER = '"bpe_simple_vocab_16e6.txt#version: 0.2'
WAY_OUT = ("Either point EMBEDDER_MODEL_DIR (or `python -m deploy --model DIR`, or `make run MODEL=/path`) at an "
           "existing bundle "
           "directory, or build an explicitly random, NOT semantic demo bundle with "
           "`python -m embedder_service.models random --preset vit-b-32 --out DIR` (`make run MODEL=random`).")


class HubError(Exception):
    """The hub answered, but not with something we can use (no such repo, revision or file)."""


class HubUnavailable(HubError):
    """The hub cannot be reached (offline, DNS, timeout, offline mode)."""


def _reason(exc: BaseException) -> str:
    """One line naming an exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip(": ")


def _resolve(repo_id: str, revision: str | None, timeout: float) -> tuple[str, set[str]]:
    """The commit hash of repo_id@revision and the files it holds."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo_id, revision=revision, timeout=timeout)
    except RevisionNotFoundError as exc:
        raise HubError(f"{repo_id} has no revision {revision!r}") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"no hub repository {repo_id!r} (or it is private or gated: set HF_TOKEN)") from exc
    except Exception as exc:  # network errors differ by hub version (requests, httpx)
        raise HubUnavailable(f"cannot reach the Hugging Face hub for {repo_id} ({_reason(exc)}). {WAY_OUT}") from exc
    return str(info.sha), {s.rfilename for s in info.siblings or []}


def download(out_dir: str | Path, repo_id: str = DEFAULT_REPO, revision: str | None = None,
             timeout: float = TIMEOUT_S) -> Bundle:
    """Download repo_id's ONNX towers (transformers.js or immich layout) and write them as a bundle in out_dir."""
    from huggingface_hub import hf_hub_download

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} already exists and is not empty; choose a new directory")
    sha, files = _resolve(repo_id, revision, timeout)
    layout = "immich" if immich.is_layout(files) else "transformers.js"
    if layout == "immich":
        wanted = immich.wanted(files)
        missing = [name for name in immich.REQUIRED if name not in files]
    else:
        # External weight files (optimum names them like onnx/text_model.onnx_data) come along if present.
        wanted = sorted(name for name in files if name in (IMAGE_SRC, TEXT_SRC, MERGES, *CONFIGS)
                        or name.startswith((f"{IMAGE_SRC}_data", f"{TEXT_SRC}_data")))
        missing = [name for name in (IMAGE_SRC, TEXT_SRC, MERGES) if name not in files]
    if missing:
        raise HubError(f"{repo_id} has no {', '.join(missing)}: it is laid out neither like {DEFAULT_REPO} "
                       f"nor like immich's models (immich-app/ViT-B-32__openai)")
    # Download next to the bundle (not into the hub cache), so there is one copy after the conversion,
    # and a rerun after an interruption resumes.
    staging = out.parent / f".{out.name}.download"
    for name in wanted:
        log.info("downloading %s/%s@%s", repo_id, name, sha[:12])
        try:
            hf_hub_download(repo_id, name, revision=sha, local_dir=staging, etag_timeout=timeout)
        except Exception as exc:  # as in _resolve
            raise HubUnavailable(f"downloading {name} from {repo_id} failed ({_reason(exc)}). {WAY_OUT}") from exc
    convert = immich.bundle_from_immich if layout == "immich" else bundle_from_files
    found = convert(staging, out, name=repo_id.split("/")[-1], source=f"hf:{repo_id}@{sha}")
    shutil.rmtree(staging, ignore_errors=True)
    return found


def bundle_from_files(repo_dir: str | Path, out_dir: str | Path, name: str, source: str) -> Bundle:
    """Turn a local copy of a hub repo (see the assumed layout above) into a checked bundle."""
    repo, out = Path(repo_dir), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} already exists and is not empty; choose a new directory")
    configs = {n: json.loads((repo / n).read_text()) if (repo / n).is_file() else {} for n in CONFIGS}
    model_config = configs["config.json"]
    image_size, mean, std = preprocess_from_config(
        configs["preprocessor_config.json"], model_config.get("vision_config", {}).get("image_size", 224))
    with bundles.staged(out) as staging:
        dims = {normalize_image_graph(repo / IMAGE_SRC, staging / bundles.IMAGE_FILE),
                normalize_text_graph(repo / TEXT_SRC, staging / bundles.TEXT_FILE),
                model_config.get("projection_dim")} - {None, 0}
        if len(dims) != 1:
            raise BundleError(f"{repo}: cannot tell the embedding width (graphs and config say {sorted(dims)})")
        with tempfile.TemporaryDirectory() as tmp:
            vocab_from_merges(repo / MERGES, Path(tmp) / bundles.VOCAB_FILE)
            write_clip_tokenizer(Path(tmp) / bundles.VOCAB_FILE, staging / bundles.TOKENIZER_FILE)
        context = model_config.get("text_config", {}).get("max_position_embeddings", 77)
        found = Bundle(name=name, source=source, dim=dims.pop(), image=ImageSpec(size=image_size, mean=mean, std=std),
                       text=TextSpec(context_length=context), path=staging,
                       extra={"converted_from": [IMAGE_SRC, TEXT_SRC, MERGES]})
        verify_bundle(found)  # runs both graphs: shapes, dynamic batch, short vs padded text
        bundles.save(found)
    return bundles.load(out)


def preprocess_from_config(config: dict[str, Any], default_size: int) -> tuple[int, Channels, Channels]:
    """Image size, mean and std from a transformers preprocessor config; refuses rules bundles lack."""

    def side(value: int | dict[str, int]) -> int:
        if not isinstance(value, dict):
            return int(value)
        sides = {value[k] for k in ("shortest_edge", "height", "width") if value.get(k)}
        if len(sides) != 1:
            raise BundleError(f"unsupported image size setting {value}")
        return int(sides.pop())

    crop = side(config.get("crop_size", default_size))
    size = side(config.get("size", crop))
    # The bundle rule: shortest side to image_size (bicubic = PIL resample 3), then a centre crop.
    if size != crop or config.get("resample", 3) != 3 or not config.get("do_center_crop", True):
        raise BundleError(f"preprocessing (size {size}, crop {crop}, resample {config.get('resample')}) "
                          "differs from the bundle's shortest-side bicubic resize + centre crop")
    mean = bundles.channels(config.get("image_mean", CLIP_MEAN), "image_mean")
    std = bundles.channels(config.get("image_std", CLIP_STD), "image_std")
    return crop, mean, std


def vocab_from_merges(merges: Path, dst: Path) -> None:
    """Write the bpe_simple_vocab_16e6.txt.gz form (header line, then merges) of a merges.txt."""
    lines = merges.read_text(encoding="utf-8").split("\n")
    body = lines[1 : N_MERGES + 1]
    if not lines[0].startswith("#version") or len(body) < N_MERGES or any(len(x.split(" ")) != 2 for x in body):
        raise BundleError(f"{merges} is not a CLIP BPE merges file ({len(lines)} lines)")
    # mtime=0 and no file name in the header: the same merges always give the same bytes (and version).
    with dst.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(("\n".join([VOCAB_HEADER, *body]) + "\n").encode("utf-8"))


def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Real inputs (old exports also list every initializer as an input)."""
    weights = {t.name for t in graph.initializer}
    return [value for value in graph.input if value.name not in weights]


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """Graphs held in a node's attributes (If, Loop, Scan)."""
    for attr in node.attribute:
        yield from ([attr.g] if attr.HasField("g") else [])
        yield from attr.graphs


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every node (subgraphs included) read `new` where it read `old`."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for sub in _subgraphs(node):
            _rename_uses(sub, old, new)


def _used_names(node: onnx.NodeProto) -> Iterator[str]:
    """Names a node reads, including outer-scope names read inside its subgraphs."""
    yield from node.input
    for sub in _subgraphs(node):
        for inner in sub.node:
            yield from _used_names(inner)


def _keep_only(graph: onnx.GraphProto, output: str) -> int:
    """Drop every output but `output` and the nodes only they needed; returns its width (0 if dynamic)."""
    chosen = [value for value in graph.output if value.name == output]
    if not chosen:
        raise BundleError(f"graph has no output {output!r}; it has {[v.name for v in graph.output]}")
    del graph.output[:]
    graph.output.extend(chosen)
    needed, kept = {output}, []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(_used_names(node))
    del graph.node[:]
    graph.node.extend(reversed(kept))
    weights = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(weights)
    dims = chosen[0].type.tensor_type.shape.dim
    return dims[-1].dim_value if len(dims) == 2 else 0


def _rename_output(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Give a graph output our interface name, wherever it is produced or read."""
    if old == new:
        return
    if any(new in node.output for node in graph.node):
        raise BundleError(f"graph already has a value named {new!r}")
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
    _rename_uses(graph, old, new)
    for value in graph.output:
        if value.name == old:
            value.name = new


def _rename_input(graph: onnx.GraphProto, value: onnx.ValueInfoProto, new: str) -> None:
    """Give a graph input our interface name."""
    if value.name != new:
        _rename_uses(graph, value.name, new)
        value.name = new


def normalize_image_graph(src: Path, dst: Path, output: str = bundles.IMAGE_OUTPUT) -> int:
    """Rewrite a vision graph to pixel_values -> image_embeds only (from its `output`); returns the width."""
    model = onnx.load(str(src))
    inputs = _graph_inputs(model.graph)
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise BundleError(f"{src}: expected one float32 image input, found {[v.name for v in inputs]}")
    _rename_input(model.graph, inputs[0], bundles.IMAGE_INPUT)
    dim = _keep_only(model.graph, output)
    _rename_output(model.graph, output, bundles.IMAGE_OUTPUT)
    _save(model, dst)
    return dim


def _int64_input(graph: onnx.GraphProto, value: onnx.ValueInfoProto, name: str) -> list[onnx.NodeProto]:
    """Name an integer input `name` and declare it int64 (our interface), with a cast to what the graph read."""
    _rename_input(graph, value, name)
    old_type = value.type.tensor_type.elem_type
    if old_type == TensorProto.INT64:
        return []
    _rename_uses(graph, name, f"{name}_cast")
    value.type.tensor_type.elem_type = TensorProto.INT64
    return [helper.make_node("Cast", [name], [f"{name}_cast"], to=old_type, name=f"{name}_cast")]


def normalize_text_graph(src: Path, dst: Path, ids_name: str = "input_ids", output: str = bundles.TEXT_OUTPUT,
                         keep_mask: bool = False) -> int:
    """Rewrite a text graph to int64 input_ids [and attention_mask] -> text_embeds only; returns the width.

    Without keep_mask an attention_mask input is replaced by ones (right for CLIP's causal tower only).
    """
    model = onnx.load(str(src))
    graph = model.graph
    inputs = {value.name: value for value in _graph_inputs(graph)}
    ids, mask = inputs.pop(ids_name, None), inputs.pop("attention_mask", None)
    if ids is None or inputs:
        raise BundleError(f"{src}: expected inputs {ids_name} [and attention_mask], found "
                          f"{[v.name for v in _graph_inputs(graph)]}")
    # Our interface feeds int64; a graph exported with int32 ids gets a cast in front.
    front = _int64_input(graph, ids, bundles.TEXT_INPUT)
    if mask is not None and keep_mask:
        front += _int64_input(graph, mask, bundles.TEXT_MASK)
    elif mask is not None:
        # All ones is the right mask: CLIP's text attention is causal and pools at the eot token, so
        # whatever follows eot (padding) never reaches the output. The mask input thus disappears.
        mask_type = mask.type.tensor_type.elem_type
        front += [helper.make_node("Shape", [bundles.TEXT_INPUT], ["input_ids_shape"], name="attention_mask_shape"),
                  helper.make_node("ConstantOfShape", ["input_ids_shape"], [mask.name], name="attention_mask_ones",
                                   value=helper.make_tensor("value", mask_type, [1], [1]))]
        graph.input.remove(mask)
    for i, node in enumerate(front):
        graph.node.insert(i, node)
    dim = _keep_only(graph, output)
    _rename_output(graph, output, bundles.TEXT_OUTPUT)
    _save(model, dst)
    return dim


def _save(model: onnx.ModelProto, dst: Path) -> None:
    """Check and write a graph as one file (CLIP towers are far below protobuf's 2 GB limit)."""
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
