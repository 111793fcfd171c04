"""The model CLI: obtain, build, convert and describe model bundles.

    python -m embedder_service.models --help

Download, list, int8, fp16, info and obtain (for hub bundles or paths) run without torch; random and
export-* need the export extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from embedder_service.models import bundle as bundles
from embedder_service.models import catalog, hub
from embedder_service.models.bundle import Bundle, BundleError

log = logging.getLogger("embedder_service.models")

OBTAIN_KEYWORDS = ("hub", "random", "random-int8")
RANDOM_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  {model_id} has RANDOM weights: its embeddings are NOT semantic, so search results are noise.
!!  Good for trying the plumbing and for benchmarks only. For real search use MODEL=hub or a bundle
!!  exported from a real checkpoint (export-hf / export-open-clip).
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures that deserve a one-line message rather than a traceback."""
    from embedder_service.models.quantize import QuantizeError
    from embedder_service.models.verify import ExportError

    return BundleError, hub.HubError, ExportError, QuantizeError, OSError


def describe(found: Bundle) -> str:
    """A human summary of a bundle: model.json plus the graphs' interface and sizes."""
    from embedder_service.models.quantize import graph_summary

    meaning = "yes" if found.semantic else "NO: random weights, embeddings carry no meaning"
    image, text = found.image, found.text
    lines = [
        f"path        {found.path}",
        f"model id    {found.model_id}",
        f"semantic    {meaning}",
        f"source      {found.source}",
        f"precision   {found.precision}",
        f"family      {found.family} (format {found.format}), languages {', '.join(found.languages)}",
        f"dim         {found.dim}",
        f"image       {image.size}px, {image.resize}, {image.interpolation}, mean {image.mean}, std {image.std}",
        f"text        {text.context_length} tokens, padding {text.padding}, clean-up {text.clean}"
        f"{', lower case' if text.lower_case else ''}, pad id {text.pad_id}"
        f"{', attention_mask input' if text.attention_mask else ''}",
    ]
    for label, path in (("image.onnx", found.image_onnx), ("text.onnx", found.text_onnx),
                        ("tokenizer", found.tokenizer)):
        size = f"{path.stat().st_size / 1e6:7.1f} MB"
        if path.suffix == ".onnx":
            graph = graph_summary(path)
            size += (f"  {', '.join(graph.inputs)} -> {', '.join(graph.outputs)}"
                     f"  (opset {graph.opset}, weights {'/'.join(graph.weights)})")
        lines.append(f"{label:<11} {size}")
    if found.extra:
        lines.append(f"extra       {json.dumps(found.extra, sort_keys=True)}")
    return "\n".join(lines)


def _report(found: Bundle) -> int:
    """Print the one-line result of a build command."""
    note = "" if found.semantic else ", NOT semantic: random weights"
    print(f"wrote {found.model_id} ({found.precision}, dim {found.dim}{note}) to {found.path}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """download: fetch ready ONNX towers from the hub."""
    repo = catalog.repo_of(args.repo)
    return _report(hub.download(args.out, repo_id=repo, revision=args.revision, timeout=args.timeout))


def cmd_list(args: argparse.Namespace) -> int:
    """list: the known ready-made models."""
    if args.json:
        print(json.dumps([asdict(k) for k in catalog.KNOWN], indent=2))
    else:
        print(catalog.table())
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    """export-hf: export a transformers checkpoint."""
    from embedder_service.models import export

    return _report(export.export_transformers(args.checkpoint, args.out, vocab=args.vocab))


def cmd_export_open_clip(args: argparse.Namespace) -> int:
    """export-open-clip: export an open_clip model."""
    from embedder_service.models import export

    return _report(export.export_open_clip(args.model, args.pretrained, args.out))


def cmd_random(args: argparse.Namespace) -> int:
    """random: build a random-weight bundle."""
    from embedder_service.models import export
    from embedder_service.models.verify import ExportError

    if args.family is not None:
        from embedder_service.models import family_export

        return _report(family_export.build_family_bundle(args.out, args.family, args.preset, seed=args.seed))
    if args.preset not in export.PRESETS:
        raise ExportError(f"preset {args.preset!r} needs --family (CLIP presets without it: "
                          f"{', '.join(export.PRESETS)})")
    return _report(export.build_random_bundle(args.out, args.preset, seed=args.seed, vocab=args.vocab))


def cmd_int8(args: argparse.Namespace) -> int:
    """int8: quantize a bundle for CPUs."""
    from embedder_service.models import quantize

    calibration = sorted(Path(args.calibration).glob("*.jp*g")) if args.calibration else []
    if args.calibration and args.method != "static":
        raise quantize.QuantizeError("--calibration calibrates --method static; dynamic needs no calibration")
    if args.calibration and not calibration:
        raise quantize.QuantizeError(f"{args.calibration}: no .jpg or .jpeg files to calibrate on")
    return _report(quantize.make_int8(args.src, args.out, method=args.method,
                                      calibration=[path.read_bytes() for path in calibration]))


def cmd_fp16(args: argparse.Namespace) -> int:
    """fp16: convert a bundle for GPUs."""
    from embedder_service.models import quantize

    return _report(quantize.make_fp16(args.src, args.out))


def cmd_info(args: argparse.Namespace) -> int:
    """info: describe a bundle."""
    found = bundles.load(args.dir)
    if args.json:
        print(json.dumps(dict(asdict(found), path=str(found.path.resolve())), indent=2))
    else:
        print(describe(found))
    return 0


def obtain(what: str, cache: Path, repo: str = hub.DEFAULT_REPO, revision: str | None = None) -> Bundle:
    """Resolve `what` (hub, random, random-int8 or a bundle path) to a ready bundle, using cache."""
    if what == "hub":
        repo = catalog.repo_of(repo)
        target = cache / "hub" / (repo.replace("/", "--") + (f"@{revision}" if revision else ""))
        if (target / bundles.MANIFEST).is_file():
            log.info("using the cached download in %s", target)
            return bundles.load(target)
        return hub.download(target, repo_id=repo, revision=revision)
    if what in ("random", "random-int8"):
        from embedder_service.models import export

        precision = "int8" if what == "random-int8" else "fp32"
        found = bundles.load(export.cached_random_bundle(cache / "random", "vit-b-32", precision))
        print(RANDOM_WARNING.format(model_id=found.model_id), file=sys.stderr)
        return found
    path = Path(what)
    if not path.exists():
        raise BundleError(f"{what!r} is neither {', '.join(OBTAIN_KEYWORDS)} nor an existing bundle directory")
    return bundles.load(path)


def cmd_obtain(args: argparse.Namespace) -> int:
    """obtain: the bundle `make run` serves."""
    found = obtain(args.what, Path(args.cache), repo=args.repo, revision=args.revision)
    if args.print_path:
        print(found.path.resolve())
    else:
        print(describe(found))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with help for every command and option."""
    parser = argparse.ArgumentParser(
        prog="python -m embedder_service.models",
        description="Obtain, build, convert and describe model bundles (model.json, image.onnx, text.onnx, "
                    "tokenizer.json). Exit status: 0 ok, 1 failure (one-line message on stderr), 2 usage error.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (debug level) to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(run=run)
        return p

    def out_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, metavar="DIR", help="new bundle directory (must be absent or empty)")

    p = command("download", cmd_download, "download ready ONNX towers from the Hugging Face hub (no torch)")
    p.add_argument("--repo", default=hub.DEFAULT_REPO, metavar="ID",
                   help="a name from `list`, or a hub repository laid out like Xenova/clip-vit-base-patch32 "
                        "(onnx/vision_model.onnx, onnx/text_model.onnx, merges.txt) or like immich's models "
                        f"(visual/model.onnx, textual/model.onnx, textual/tokenizer.json; default {hub.DEFAULT_REPO})")
    p.add_argument("--revision", metavar="R", help="branch, tag or commit of the repository (default: main)")
    p.add_argument("--timeout", type=float, default=hub.TIMEOUT_S, metavar="S",
                   help=f"network timeout in seconds for reaching the hub (default {hub.TIMEOUT_S:g})")
    out_option(p)

    p = command("export-hf", cmd_export_hf, "export a transformers CLIP checkpoint (needs torch)")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="local checkpoint directory or hub id")
    p.add_argument("--vocab", metavar="FILE", help="BPE vocabulary .txt.gz (default: the checkpoint's "
                                                   "merges.txt, else the shared or open_clip copy)")
    out_option(p)

    p = command("export-open-clip", cmd_export_open_clip,
                "export an open_clip model (needs torch and open_clip_torch)")
    p.add_argument("model", metavar="MODEL", help="open_clip model name, e.g. ViT-B-32")
    p.add_argument("pretrained", metavar="PRETRAINED", help="open_clip pretrained tag or file, e.g. laion2b_s34b_b79k")
    out_option(p)

    from embedder_service.models.export import PRESETS  # plain data; torch is imported only when building
    from embedder_service.models.families import FAMILIES

    presets = {"real", *PRESETS, *(p for f in FAMILIES.values() for p in f.presets)}
    p = command("random", cmd_random, "build a bundle with random weights: NOT semantic; for tests, benchmarks, "
                                      "demos of the plumbing (needs torch)")
    p.add_argument("--family", choices=list(FAMILIES),
                   help="a model family's format-2 bundle, towers L2-normalised (default: the CLIP bundle of "
                        "--preset, as before)")
    p.add_argument("--preset", required=True, choices=sorted(presets),
                   help="vit-b-32: the exact ViT-B/32 shape (600 MB); tiny: two thin layers per tower (15 MB); "
                        "with --family: tiny, real (the family's first real shape) or a named real shape "
                        "(clip: vit-b-32, vit-b-16, vit-l-14; siglip: base-224, base-384; siglip2: base-224; "
                        "mclip: xlmr-base-vit-b-32)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random weights (default 0)")
    p.add_argument("--vocab", metavar="FILE", help="BPE vocabulary .txt.gz (default: the shared or open_clip copy)")
    out_option(p)

    p = command("int8", cmd_int8, "convert an fp32 bundle into an int8 bundle for CPU serving")
    p.add_argument("src", metavar="SRC", help="fp32 bundle directory")
    out_option(p)
    p.add_argument("--method", choices=("dynamic", "static"), default="dynamic",
                   help="dynamic (default): activation ranges measured on every call; static: image tower "
                        "calibrated ahead of time, QDQ with per-channel weights (the text tower is dynamic in both)")
    p.add_argument("--calibration", metavar="DIR",
                   help="with --method static: calibrate on the JPEGs in DIR (default: synthetic image-like ones)")

    p = command("fp16", cmd_fp16, "convert an fp32 bundle into an fp16 bundle (float32 inputs and outputs) for "
                                  "GPU serving")
    p.add_argument("src", metavar="SRC", help="fp32 bundle directory")
    out_option(p)

    p = command("list", cmd_list, "print the known ready-made models: name, family, dim, image size, languages, "
                                  "download size, source")
    p.add_argument("--json", action="store_true", help="print them as JSON")

    p = command("info", cmd_info, "describe a bundle: model.json, graph inputs and outputs, file sizes")
    p.add_argument("dir", metavar="DIR", help="bundle directory")
    p.add_argument("--json", action="store_true", help="print model.json (plus the resolved path) as JSON")

    p = command("obtain", cmd_obtain, "resolve the bundle to serve (used by `make run`), building or downloading "
                                      "it into the cache on first use")
    p.add_argument("what", metavar="{hub,random,random-int8,PATH}",
                   help="hub: download the default ONNX CLIP (reused once present); random / random-int8: a "
                        "cached random-weight ViT-B/32 bundle, NOT semantic (needs torch); PATH: an existing "
                        "bundle directory, checked and used as is")
    p.add_argument("--cache", required=True, metavar="DIR", help="directory for downloaded and built bundles")
    p.add_argument("--print-path", action="store_true",
                   help="print only the bundle's path on stdout (everything else goes to stderr)")
    p.add_argument("--repo", default=hub.DEFAULT_REPO, metavar="ID",
                   help="hub repository, or a name from `list`, for `hub`")
    p.add_argument("--revision", metavar="R", help="revision for `hub` (default: main)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    # Logs go to stderr so stdout carries only results (a path with --print-path).
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedder_service").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        status: int = args.run(args)  # each subcommand's handler, set by its parser
        return status
    except expected_errors() as exc:
        if args.verbose:
            log.exception("failed")
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 1
