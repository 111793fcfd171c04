"""Run the whole system locally: `python -m deploy` (what `make run` does).

Obtains a model bundle, starts the index service (with its embedded Postgres unless --dsn is given), the
embedder and the gateway on loopback, waits until each is healthy, prints the URL, optionally loads a
folder or Caltech-256, and keeps the services up until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from pathlib import Path

from deploy.supervisor import Service, Supervisor, die_with_parent, grpc_ready, http_ready, port_taken
from semsearch_common import logs, process

log = logging.getLogger("deploy")


def build_parser() -> argparse.ArgumentParser:
    """Every option of the launcher, with its help."""
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hub", metavar="WHAT",
                   help="hub (download CLIP ViT-B/32 once into the cache), random / random-int8 (random weights "
                        "of the same shape: NOT semantic, a plumbing demo), or a bundle directory (default: hub)")
    p.add_argument("--cache", type=Path, default=Path(".cache/models"), help="where downloaded and built "
                   "bundles are kept (default: .cache/models)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="the index's media store and embedded "
                   "Postgres live under DIR/index (default: ./data)")
    p.add_argument("--dsn", help="use this Postgres (with Lantern or pgvector) instead of the embedded one")
    p.add_argument("--host", default="127.0.0.1", help="address the gateway listens on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="gateway HTTP port (default: 8080)")
    p.add_argument("--embedder-port", type=int, default=50051, help="embedder gRPC port (default: 50051)")
    p.add_argument("--index-port", type=int, default=50052, help="index gRPC port (default: 50052)")
    p.add_argument("--load", type=Path, metavar="DIR", help="after start, load this folder (labels from "
                   "folder names)")
    p.add_argument("--load-caltech", type=Path, metavar="DIR", help="after start, load Caltech-256 from "
                   "this extracted tree or archive folder (downloaded there if missing)")
    return p


def services(args: argparse.Namespace, model_dir: Path) -> list[Service]:
    """The three services in start order, wired to each other on loopback."""
    embedder_addr = f"127.0.0.1:{args.embedder_port}"
    index_addr = f"127.0.0.1:{args.index_port}"
    index_env = {"INDEX_PORT": str(args.index_port), "INDEX_DATA_DIR": str((args.data_dir / "index").resolve())}
    if args.dsn:
        index_env["INDEX_DSN"] = args.dsn
    return [
        Service("index", "index_service", index_env, grpc_ready(index_addr)),
        Service("embedder", "embedder_service",
                {"EMBEDDER_PORT": str(args.embedder_port), "EMBEDDER_MODEL_DIR": str(model_dir)},
                grpc_ready(embedder_addr)),
        Service("gateway", "gateway",
                {"GATEWAY_HOST": args.host, "GATEWAY_PORT": str(args.port), "GATEWAY_EMBEDDER_ADDR": embedder_addr,
                 "GATEWAY_INDEX_ADDR": index_addr},
                http_ready(f"http://127.0.0.1:{args.port}/readyz")),
    ]


def ports(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(what, host, port) of every port the services will listen on."""
    return [("index gRPC", "127.0.0.1", args.index_port), ("embedder gRPC", "127.0.0.1", args.embedder_port),
            ("gateway HTTP", args.host, args.port)]


def port_problem(args: argparse.Namespace) -> str | None:
    """Why the services could not all listen, or None: checked before anything starts.

    A second launcher on the same ports must not start its services at all: an index sharing a port
    would split the calls between two collections. The services refuse a taken port themselves too;
    this check only makes the refusal quick and whole.
    """
    seen: dict[int, str] = {}
    for what, host, port in ports(args):
        if port in seen:
            return f"the {what} and {seen[port]} ports are both {port}"
        seen[port] = what
        if port_taken(host, port):
            return f"port {port} ({what} on {host}) is taken; is semsearch already running?"
    return None


def load_command(args: argparse.Namespace) -> list[str] | None:
    """The loader invocation asked for, if any."""
    addrs = ["--embedder", f"127.0.0.1:{args.embedder_port}", "--index", f"127.0.0.1:{args.index_port}"]
    if args.load:
        return [sys.executable, "-m", "loader", "dir", str(args.load), *addrs]
    if args.load_caltech:
        return [sys.executable, "-m", "loader", "caltech256", "--data-dir", str(args.load_caltech), "--download",
                *addrs]
    return None


def main(argv: list[str] | None = None) -> int:
    """Obtain the model, start and supervise the services, stop them on a signal."""
    args = build_parser().parse_args(argv)
    logs.setup("INFO", "text")
    if (problem := port_problem(args)) is not None:
        return process.startup_error("deploy", problem)
    from embedder_service.models import cli as models  # after the check: importing the model tools takes a while

    try:
        bundle = models.obtain(args.model, args.cache)
    except models.expected_errors() as exc:
        print(f"cannot obtain a model: {exc}", file=sys.stderr)
        return 1
    supervisor = Supervisor(services(args, bundle.path.resolve()))
    loader: subprocess.Popen[bytes] | None = None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stopping.set())
    try:
        supervisor.start_all()
        url = f"http://{args.host}:{args.port}/"
        print(f"\nsemsearch is ready: {url}  (model {bundle.model_id}; Ctrl-C stops everything)\n", flush=True)
        if not bundle.semantic:
            print("warning: the model has random weights; search results are NOT semantic\n", flush=True)
        if (command := load_command(args)) is not None:
            loader = subprocess.Popen(command, preexec_fn=die_with_parent)
        supervisor.watch()
        return 0
    except InterruptedError:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        if loader is not None and loader.poll() is None:
            loader.terminate()
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
