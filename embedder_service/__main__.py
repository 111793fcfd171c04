"""Run the embedder: `python -m embedder_service` (settings from EMBEDDER_* variables)."""

from __future__ import annotations

import logging
import sys

from embedder_service.config import EmbedderConfig
from embedder_service.engine import Engine
from embedder_service.model import ClipModel, ProviderError
from embedder_service.models import bundle
from embedder_service.server import create_server
from semsearch_common import logs, process
from semsearch_common.config import ConfigError
from semsearch_common.server import PortInUse

log = logging.getLogger("embedder_service")
NAME = "embedder"


def main() -> int:
    """Start serving, load the model, serve until SIGTERM/SIGINT."""
    try:
        config = EmbedderConfig.from_env()
        if not config.model_dir:
            raise ConfigError("EMBEDDER_MODEL_DIR is not set: point it at a model bundle "
                              "(make one with `python -m embedder_service.models --help`)")
    except ConfigError as exc:
        return process.config_error(NAME, exc)
    logs.setup(config.log_level, config.log_format)
    stop = process.stop_event()
    try:
        server = create_server(config)
    except PortInUse as exc:
        return process.startup_error(NAME, exc)
    try:
        process.serve_metrics(config.metrics_port, config.host)
    except OSError as exc:
        server.stop(0)
        return process.startup_error(NAME, f"cannot serve metrics on {config.host}:{config.metrics_port}: {exc}")
    log.info("listening on %s:%d (NOT_SERVING until the model is loaded)", config.host, server.port)
    try:
        model = ClipModel(bundle.load(config.model_dir), config.provider, config.threads, config.spin_us)
        engine = Engine(model, config)  # loads the tokenizer, which may still refuse the bundle
    except (bundle.BundleError, ProviderError) as exc:
        server.stop(0)
        return process.startup_error(NAME, f"cannot load the model: {exc}")
    server.attach(engine)
    log.info("serving %s", model.bundle.model_id)
    if not model.bundle.semantic:
        log.warning("this bundle has random weights (%s): its vectors carry no meaning", model.bundle.source)
    stop.wait()
    log.info("shutting down (drain %.1fs, grace %.1fs)", config.drain_s, config.grace_s)
    server.stop(config.grace_s, config.drain_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
