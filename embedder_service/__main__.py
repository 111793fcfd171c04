"""Run the embedder: `python -m embedder_service` (settings from EMBEDDER_* variables)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from embedder_service import metrics
from embedder_service.config import ConfigError, EmbedderConfig
from embedder_service.engine import Engine
from embedder_service.model import ClipModel, ProviderError
from embedder_service.models import bundle
from embedder_service.server import create_server

log = logging.getLogger("embedder_service")


def main() -> int:
    """Start serving, load the model, serve until SIGTERM/SIGINT."""
    try:
        config = EmbedderConfig.from_env()
        if not config.model_dir:
            raise ConfigError("EMBEDDER_MODEL_DIR is not set: point it at a model bundle "
                              "(make one with `python -m embedder_service.models --help`)")
    except ConfigError as exc:
        print(f"embedder: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    server = create_server(config)
    metrics.serve(config.metrics_port, config.host)
    log.info("listening on %s:%d (NOT_SERVING until the model is loaded)", config.host, server.port)
    try:
        model = ClipModel(bundle.load(config.model_dir), config.provider, config.threads)
    except (bundle.BundleError, ProviderError) as exc:
        log.error("cannot load the model: %s", exc)
        server.stop(0)
        return 1
    server.attach(Engine(model, config))
    log.info("serving %s", model.bundle.model_id)
    if not model.bundle.semantic:
        log.warning("this bundle has random weights (%s): its vectors carry no meaning", model.bundle.source)
    stop.wait()
    log.info("shutting down (grace %.1fs)", config.grace_s)
    server.stop(config.grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
