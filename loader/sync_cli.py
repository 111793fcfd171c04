"""The `sync` command of the loader CLI: its options, one pass or --watch, signals and exit status."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from loader.clients import LoadError
from loader.config import ConfigError, LoaderConfig, LoaderEnv
from loader.sync import SyncPass, SyncRefused, SyncSummary
from loader.watch import watch

log = logging.getLogger("loader")

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
EPILOG = """\
exit status: 0 in sync; 1 some files failed (unreadable files keep their records; see the log);
2 bad usage (DIR missing or not a folder: nothing is changed); 3 the pass stopped (a service gone for
longer than --retry-s, a model mismatch, or a refusal to empty the source). --watch exits 0 on SIGTERM
or SIGINT. Rerunning is always safe: a pass killed at any point is finished by the next one.
"""


def add_parser(commands: Any, env: LoaderEnv) -> None:
    """The `sync` sub-command."""
    p = commands.add_parser(
        "sync", help="keep one source of the index equal to a folder (adds, moves, changes, removals)",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make the index's images of --source match the image files under DIR: new files are "
        "added, moved or renamed ones are recognised by content hash and linked without embedding, changed "
        "ones are updated, and the rows of files that are gone are removed (only under --source; images "
        "stored otherwise, e.g. uploads, are never removed). Files whose size and mtime match the index's "
        "record are neither read nor hashed. Folder names become labels, as with `dir`.")
    p.add_argument("path", type=Path, metavar="DIR", help="the folder to keep in sync")
    p.add_argument("--source", default="", help="the source its images are recorded under (default: DIR's name)")
    p.add_argument("--collection", default="", help="collection or alias (default: the alias 'default')")
    p.add_argument("--watch", action="store_true",
                   help="keep syncing as files appear, change and vanish, until SIGTERM or SIGINT")
    p.add_argument("--settle", type=float, default=2.0, metavar="S",
                   help="--watch: seconds without changes before a pass, and the least age of a file it "
                   "reads (default: 2)")
    p.add_argument("--allow-empty", action="store_true",
                   help="let a pass over a folder without images remove every record of the source")
    p.add_argument("--embedder", default=env.embedder_addr, help="embedder address (default: %(default)s)")
    p.add_argument("--index", default=env.index_addr, help="index address (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="deadline of each call (default: 60)")
    p.add_argument("--retry-s", type=float, default=300.0, metavar="S",
                   help="how long to retry an unavailable service before stopping (default: 300)")
    p.add_argument("--batch-size", type=int, default=32, help="images per embed request (default: 32)")
    p.add_argument("--upsert-workers", type=int, default=2, help="concurrent upserts (default: 2)")
    p.add_argument("--max-file-mb", type=float, default=50.0, help="skip larger files (default: 50)")
    p.add_argument("--json", action="store_true", help="print each pass's summary as one JSON line")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and the summary only")


def run(args: argparse.Namespace) -> int:
    """Check DIR, then one pass or --watch; returns the exit status."""
    root: Path = args.path
    if not root.exists():
        print(f"loader: {root} does not exist; nothing was changed", file=sys.stderr)
        return EXIT_USAGE
    if not root.is_dir():
        print(f"loader: {root} is not a folder; nothing was changed", file=sys.stderr)
        return EXIT_USAGE
    root = root.resolve()
    try:
        config = LoaderConfig(
            embedder_addr=args.embedder, index_addr=args.index, source=args.source or root.name,
            collection=args.collection, batch_size=args.batch_size, upsert_workers=args.upsert_workers,
            max_file_mb=args.max_file_mb, timeout_s=args.timeout, retry_s=args.retry_s)
        config.check()
        if args.settle < 0:
            raise ConfigError("--settle must not be negative")
    except ConfigError as err:
        print(f"loader: {err}", file=sys.stderr)
        return EXIT_USAGE
    show = _printer(args.json)
    stop = threading.Event()
    if args.watch:
        return _watch(root, config, args, stop, show)
    try:
        summary = SyncPass(config, root, stop, allow_empty=args.allow_empty).run()
    except (LoadError, SyncRefused) as err:
        print(f"loader: sync stopped: {err}", file=sys.stderr)
        return EXIT_STOPPED
    show(summary)
    return EXIT_FAILED_FILES if summary.failed else EXIT_OK


def _watch(root: Path, config: LoaderConfig, args: argparse.Namespace, stop: threading.Event,
           show: Any) -> int:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current step", signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    sync = SyncPass(config, root, stop, min_age_s=args.settle, allow_empty=args.allow_empty)

    def one_pass() -> SyncSummary:
        try:
            return sync.run()
        except SyncRefused as err:  # the folder emptied: keep watching, it may come back
            log.warning("%s", err)
            return SyncSummary(stopped="refused")

    log.info("watching %s (source %r; settle %.1f s)", root, config.source, args.settle)
    try:
        watch(root, one_pass, args.settle, stop, show)
    except LoadError as err:
        print(f"loader: sync stopped: {err}", file=sys.stderr)
        return EXIT_STOPPED
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return EXIT_OK


def _printer(as_json: bool) -> Any:
    def show(summary: SyncSummary) -> None:
        print(json.dumps(summary.as_dict()) if as_json else summary.text(), flush=True)

    return show
