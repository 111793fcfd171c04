"""Run the gateway: `python -m gateway` (settings from GATEWAY_* variables)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from gateway.app import create_app
from gateway.config import ConfigError, GatewayConfig


def main() -> int:
    """Read the config, then serve until interrupted."""
    try:
        config = GatewayConfig.from_env()
    except ConfigError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level=config.log_level.lower(),
                access_log=False, proxy_headers=False, server_header=False, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
