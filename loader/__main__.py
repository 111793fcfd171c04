"""The loader CLI: `python -m loader caltech256 …`, `dir PATH …`, `reembed …` or `sync DIR …` (see --help)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from loader import archive, pipeline, reembed, sources, sync_cli
from loader.archive import ArchiveError
from loader.clients import LoadError
from loader.config import ConfigError, LoaderConfig, LoaderEnv
from loader.report import Progress, Report
from loader.sources import Candidate, Shard
from semsearch_common import logs, process

log = logging.getLogger("loader")

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
EPILOG = """\
exit status: 0 all files loaded or skipped on purpose; 1 some files failed (see --report);
2 bad usage or settings; 3 the run stopped (a service gone for longer than --retry-s, a model
or dimension mismatch, a bad download). Rerunning is always safe: what the index holds is skipped.

environment: LOADER_EMBEDDER_ADDR and LOADER_INDEX_ADDR give the default addresses, LOADER_SHARD
the default --shard (e.g. set from a Kubernetes indexed Job's completion index), LOADER_LOG_FORMAT
text or json log lines (default text). Unset or blank means the default.
"""


def build_parser(env: LoaderEnv | None = None) -> argparse.ArgumentParser:
    """The argument parser of both commands; `env` gives the defaults the LOADER_* variables set."""
    env = env or LoaderEnv()
    parser = argparse.ArgumentParser(
        prog="python -m loader", description="Load images into semantic search: embed each with the "
        "embedder service and store it, with its original bytes and a thumbnail, in the index service.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cal = commands.add_parser(
        "caltech256", help="Caltech-256: download, verify, extract, clean and label it", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load Caltech-256 (30,607 images, 257 categories). Labels come from the category "
        "folders (056.dog -> dog); the known junk (056.dog/greg/, 198.spider/RENAME2) and non-image "
        "files are skipped and counted. Source: caltech256.")
    where = cal.add_argument_group("where the dataset comes from")
    where.add_argument("--path", type=Path, help="an extracted tree: the 256_ObjectCategories folder or its parent")
    where.add_argument("--data-dir", type=Path, default=Path("data/caltech256"),
                       help="where the archive is downloaded and extracted (default: %(default)s)")
    where.add_argument("--download", action="store_true",
                       help="download the archive when it is not in --data-dir (about 1.2 GB; resumes)")
    where.add_argument("--archive", type=Path, help="an already downloaded 256_ObjectCategories.tar")
    where.add_argument("--url", default=archive.CALTECH256_URL, help="download address (default: Caltech's)")
    where.add_argument("--md5", default=archive.CALTECH256_MD5,
                       help="expected MD5 of the archive, or 'none' to skip the check (default: %(default)s)")
    _common(cal, env, default_source="caltech256")

    folder = commands.add_parser(
        "dir", help="any folder of images, recursively", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load every image under PATH (JPEG, PNG, GIF, BMP, TIFF, WebP; recognised by content). "
        "Hidden folders are not entered and folder links not followed.")
    folder.add_argument("path", type=Path, metavar="PATH", help="the folder to load")
    labels = folder.add_mutually_exclusive_group()
    labels.add_argument("--label", help="one label for every image (default: the name of each image's folder)")
    labels.add_argument("--no-label", action="store_true", help="store the images without a label")
    _common(folder, env, default_source="")
    _reembed_parser(commands, env)
    sync_cli.add_parser(commands, env)
    return parser


def _reembed_parser(commands: Any, env: LoaderEnv) -> None:
    re = commands.add_parser(
        "reembed", help="re-embed a collection with the embedder's (new) model, then move the alias",
        description="Build collection --to for the model the embedder serves from the originals the index "
        "stores (adopted prototype rows from their files under --prototype-root), while searches keep using "
        "the old collection; then move --alias to it in one transaction, and drop the old collection with "
        "--drop-old. Rerunning after a stop resumes. Refused before any work when the embedder serves the "
        "source's model or --to names a collection in use.")
    re.add_argument("--to", required=True, help="name of the new collection (lower-case letters, digits, _)")
    re.add_argument("--from", dest="source", default="default",
                    help="the collection or alias to re-embed (default: %(default)s)")
    re.add_argument("--alias", default="default", help="alias to move at the end; '' moves none (default: default)")
    re.add_argument("--drop-old", action="store_true", help="drop the old collection after the alias moved")
    re.add_argument("--prototype-root", type=Path, help="folder where adopted rows' original paths resolve")
    re.add_argument("--embedder", default=env.embedder_addr, help="embedder address (default: %(default)s)")
    re.add_argument("--index", default=env.index_addr, help="index address (default: %(default)s)")
    re.add_argument("--batch-size", type=int, default=64, help="images per request (default: 64)")
    re.add_argument("--embed-workers", type=int, default=2, help="embed requests in flight (default: 2)")
    re.add_argument("--upsert-workers", type=int, default=3, help="concurrent upserts (default: 3)")
    re.add_argument("--timeout", type=float, default=60.0, metavar="S", help="deadline of each call (default: 60)")
    re.add_argument("--retry-s", type=float, default=300.0, metavar="S",
                    help="how long to retry an unavailable service before stopping (default: 300)")
    re.add_argument("--progress-s", type=float, default=10.0, metavar="S", help="seconds between progress lines")
    re.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    re.add_argument("-q", "--quiet", action="store_true", help="warnings and the summary only")


def _common(p: argparse.ArgumentParser, env: LoaderEnv, default_source: str) -> None:
    services = p.add_argument_group("services")
    services.add_argument("--embedder", default=env.embedder_addr,
                          help="embedder address host:port (default: %(default)s)")
    services.add_argument("--index", default=env.index_addr,
                          help="index address host:port (default: %(default)s)")
    services.add_argument("--collection", default="",
                          help="index collection or alias to load into (default: the alias 'default')")
    services.add_argument("--timeout", type=float, default=60.0, metavar="S",
                          help="deadline of each call, and the longest wait for a streamed answer (default: 60)")
    services.add_argument("--retry-s", type=float, default=300.0, metavar="S",
                          help="how long to keep retrying a service that is unavailable before stopping "
                          "(default: 300)")
    services.add_argument("--build-index", action=argparse.BooleanOptionalAction, default=None,
                          help="ask the index to build its approximate index at the end (default: when an "
                          "unsharded run stored images; a no-op when the index exists). A large load into an "
                          "empty collection has the index build it after the rows, not during")
    run = p.add_argument_group("what and how")
    run.add_argument("--source", default=default_source,
                     help="source recorded with each image (default: " + (default_source or "the folder's name") + ")")
    run.add_argument("--batch-size", type=int, default=32,
                     help="images per request (default: 32; at most what the embedder takes, which it publishes)")
    run.add_argument("--in-flight", type=int, default=4,
                     help="batches in each pipeline stage at once; memory is about 3 x this x batch (default: 4)")
    run.add_argument("--upsert-workers", type=int, default=2, help="concurrent upserts (default: 2)")
    run.add_argument("--thumbnail-size", type=int, default=256, help="longest side of stored thumbnails (default: 256)")
    run.add_argument("--max-file-mb", type=float, default=50.0, help="skip larger files (default: 50)")
    run.add_argument("--shard", type=_shard, default=env.shard, metavar="I/N",
                     help="load only shard I of N (0-based), for N loaders at once; shards split the files "
                     "by a hash of their relative path (default: LOADER_SHARD, else 0/1)")
    run.add_argument("--limit", type=int, default=0, metavar="N", help="stop after N candidate images (0: all)")
    run.add_argument("--dry-run", action="store_true",
                     help="count and validate only (read and decode every file here); no service is called")
    run.add_argument("--report", type=Path, metavar="FILE",
                     help="write every failed and skipped file with its reason (JSON lines, summary last)")
    out = p.add_argument_group("output")
    out.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                     help="a progress bar (auto: when stderr is a terminal) or plain periodic lines")
    out.add_argument("--progress-interval", type=float, default=10.0, metavar="S",
                     help="seconds between plain progress lines (default: 10)")
    out.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    out.add_argument("-q", "--quiet", action="store_true", help="warnings and the summary only")


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def config_of(args: argparse.Namespace, source: str) -> LoaderConfig:
    """The run's settings from parsed arguments."""
    config = LoaderConfig(
        embedder_addr=args.embedder, index_addr=args.index, source=source, batch_size=args.batch_size,
        in_flight=args.in_flight, upsert_workers=args.upsert_workers, thumbnail_size=args.thumbnail_size,
        max_file_mb=args.max_file_mb, shard=args.shard, limit=args.limit, dry_run=args.dry_run,
        report_path=args.report, timeout_s=args.timeout, retry_s=args.retry_s, build_index=args.build_index,
        progress_interval_s=args.progress_interval, collection=args.collection)
    config.check()
    return config


def caltech_tree(args: argparse.Namespace) -> Path:
    """The extracted category folders: given, already extracted, or made from the (downloaded) archive."""
    if args.path is not None:
        root = sources.caltech_root(args.path)
        if not root.is_dir():
            raise ConfigError(f"--path {args.path} is not a folder")
        return root
    tree: Path = args.data_dir / sources.CALTECH_DIR
    if tree.is_dir():
        log.info("using the extracted tree %s", tree)
        return tree
    md5 = None if args.md5.lower() == "none" else args.md5
    tar = args.archive or args.data_dir / "256_ObjectCategories.tar"
    if args.download:
        archive.download(args.url, tar, md5)
    elif not tar.exists():
        raise ConfigError(f"no Caltech-256 under {args.data_dir}: pass --download to fetch it (about 1.2 GB), "
                          "--archive for a downloaded tar, or --path for an extracted tree")
    elif md5 is not None and (got := archive.md5_of(tar)) != md5.lower():
        raise ArchiveError(f"checksum mismatch for {tar}: expected MD5 {md5.lower()}, got {got}")
    log.info("extracting %s into %s", tar, args.data_dir)
    archive.extract(tar, args.data_dir)
    if not tree.is_dir():
        raise ArchiveError(f"{tar} holds no {sources.CALTECH_DIR} folder")
    return tree


def candidates_of(args: argparse.Namespace, config: LoaderConfig) -> tuple[Callable[[], Iterable[Candidate]], str]:
    """A re-startable walk of the files to load, and the source to record."""
    if args.command == "caltech256":
        root = caltech_tree(args)
        def walk() -> Iterator[Candidate]:
            return sources.walk(root, sources.caltech_label, sources.is_caltech_junk, config.shard)

        return (lambda: _limited(walk(), config.limit)), config.source
    root = args.path.resolve()
    if not root.is_dir():
        raise ConfigError(f"{args.path} is not a folder")
    labeler = (sources.fixed_label("") if args.no_label else sources.fixed_label(args.label)
               if args.label is not None else sources.parent_label(root.name))
    return (lambda: _limited(sources.walk(root, labeler, shard=config.shard), config.limit)), \
        config.source or root.name


def _limited(found: Iterator[Candidate], limit: int) -> Iterator[Candidate]:
    """Stop after `limit` candidate images (files skipped by path rules do not count)."""
    if not limit:
        yield from found
        return
    images = 0
    for c in found:
        if images >= limit:
            return
        images += c.skip is None
        yield c


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    try:
        env = LoaderEnv.from_env()
    except ConfigError as err:
        return process.config_error("loader", err)
    args = build_parser(env).parse_args(argv)
    logs.setup("DEBUG" if args.verbose else "WARNING" if args.quiet else "INFO", env.log_format)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("loader: interrupted; rerun to continue where it stopped", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "reembed":
        return _reembed(args)
    if args.command == "sync":
        return sync_cli.run(args)
    try:
        config = config_of(args, args.source)
        walk, source = candidates_of(args, config)
        config = dataclasses.replace(config, source=source)
    except ConfigError as err:
        print(f"loader: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ArchiveError as err:
        print(f"loader: {err}", file=sys.stderr)
        return EXIT_STOPPED
    mode = "lines" if args.progress == "auto" and not sys.stderr.isatty() else args.progress
    progress = None if mode == "none" or args.quiet else Progress(config.progress_interval_s, bar=mode != "lines")
    report = Report(config.report_path, progress, config.dry_run)
    log.info("loading %s (source %r, shard %d/%d) into %s via %s", args.command, config.source,
             config.shard.index, config.shard.count, config.index_addr, config.embedder_addr)
    # While a bar is drawn, log lines are printed above it instead of through it.
    redirect = logging_redirect_tqdm() if progress is not None and progress.bar_wanted else contextlib.nullcontext()
    try:
        with redirect:
            summary = pipeline.run(config, walk, report)
    except LoadError as err:
        print(report.summary.text(), flush=True)
        print(f"loader: stopped: {err}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print(report.summary.text(), flush=True)
        raise
    print(summary.text(), flush=True)
    return EXIT_FAILED_FILES if summary.failed else EXIT_OK

def _reembed(args: argparse.Namespace) -> int:
    cfg = reembed.ReembedConfig(
        index_addr=args.index, embedder_addr=args.embedder, target=args.to, source=args.source, alias=args.alias,
        drop_old=args.drop_old, batch_size=args.batch_size, embed_workers=args.embed_workers,
        upsert_workers=args.upsert_workers,
        timeout_s=args.timeout,
        retry_s=args.retry_s, prototype_root=args.prototype_root, progress_s=args.progress_s)
    try:
        out = reembed.Reembed(cfg).run()
    except LoadError as err:
        print(f"loader: reembed stopped: {err}", file=sys.stderr)
        return EXIT_STOPPED
    print(f"re-embedded {out.source} -> {out.target}: {out.embedded} embedded, {out.present} already there, "
          f"{out.failed} failed in {out.seconds:.1f} s ({out.rate:.1f} images/s); alias "
          f"{'moved' if out.swapped else 'not moved'}{'; old collection dropped' if out.dropped else ''}",
          flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
