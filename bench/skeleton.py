"""A random bundle without its weights (a few MB), and a bundle regrown from it where torch is missing.

    python -m bench.skeleton strip BUNDLE OUT_DIR      # keep graphs, settings, vocabulary, weight statistics
    python -m bench.skeleton grow SKELETON OUT_BUNDLE  # draw the weights again: no torch needed

A random ViT-B/32 bundle is 600 MB: too big to carry to a GPU machine, and building it there needs torch.
Speed does not depend on the weight values, and the fp16 check only needs activations of the same scale,
so the skeleton keeps every large float tensor's shape, mean and standard deviation, and `grow` draws
new values from a normal distribution with them (small tensors, LayerNorm scales among them, stay exact).
The regrown bundle is as meaningless as the random one: model.json says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from embedder_service.models import bundle as bundles
from embedder_service.tokenizer import write_tokenizer_json

MANIFEST = "skeleton.json"
GRAPHS = (bundles.IMAGE_FILE, bundles.TEXT_FILE)
# Tensors above this many values are regrown; below it (biases, LayerNorm scales, constants) they stay.
LARGE = 4096


def _float_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """The graph's float32 weights: initializers and the values of Constant nodes."""
    yield from (t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    for node in model.graph.node:
        if node.op_type == "Constant":
            yield from (a.t for a in node.attribute if a.name == "value" and a.t.data_type == onnx.TensorProto.FLOAT)


def strip(src: Path, out: Path) -> Path:
    """Write the skeleton of a fp32 bundle into out (which must not exist)."""
    found = bundles.load(src)
    if found.precision != "fp32":
        raise ValueError(f"{src} is {found.precision}; strip an fp32 bundle")
    out.mkdir(parents=True)
    stats: dict[str, dict[str, list[float]]] = {}
    for name in GRAPHS:
        model = onnx.load(str(src / name))
        stats[name] = {}
        for tensor in _float_tensors(model):
            if int(np.prod(tensor.dims)) >= LARGE:
                values = numpy_helper.to_array(tensor)
                stats[name][tensor.name] = [float(values.mean()), float(values.std())]
                tensor.ClearField("raw_data")
                tensor.ClearField("float_data")
        onnx.save(model, str(out / name))
    shutil.copyfile(found.tokenizer, out / found.tokenizer.name)
    manifest = json.loads((src / bundles.MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({"bundle": manifest, "stats": stats}, indent=1) + "\n")
    return out


def is_skeleton(path: Path) -> bool:
    """Whether path holds a skeleton rather than a bundle."""
    return (path / MANIFEST).is_file()


def grow(skeleton: Path, out: Path, seed: int = 0) -> bundles.Bundle:
    """A loadable fp32 bundle from a skeleton, its large weights drawn anew."""
    spec = json.loads((skeleton / MANIFEST).read_text())
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in GRAPHS:
        model = onnx.load(str(skeleton / name))
        drawn = spec["stats"][name]
        for tensor in _float_tensors(model):
            if tensor.name in drawn:
                mean, std = drawn[tensor.name]
                values = rng.normal(mean, std, size=tuple(tensor.dims)).astype(np.float32)
                tensor.raw_data = values.tobytes()
        onnx.save(model, str(out / name))
    # model.json as the skeleton recorded it, format 1 or 2; the tokenizer lies beside it.
    source = bundles.parse(spec["bundle"], str(skeleton / MANIFEST), skeleton)
    tokenizer = write_tokenizer_json(source, out)
    source = replace(source, path=out, text=replace(source.text, tokenizer=tokenizer))
    return bundles.save(replace(source, source=f"{source.source}:regrown{seed}", semantic=False,
                                extra={**source.extra, "regrown_from": source.version}))


def main(argv: list[str] | None = None) -> int:
    """strip or grow, as the module docstring shows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("strip", "grow"))
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "strip":
        print(f"wrote {strip(args.src, args.out)}")
    else:
        print(f"wrote {grow(args.src, args.out).model_id} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
