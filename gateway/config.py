"""Gateway settings, read once from GATEWAY_* environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting has a bad value; the message names the variable."""


@dataclass(frozen=True)
class GatewayConfig:
    """Every knob of the gateway; each field is GATEWAY_<FIELD> in the environment."""

    host: str = "127.0.0.1"
    port: int = 8080
    embedder_addr: str = "127.0.0.1:50051"
    index_addr: str = "127.0.0.1:50052"
    # Bearer token for the write endpoints (upload, delete); empty = open.
    token: str = field(default="", repr=False)  # kept out of logs
    # Serve write endpoints without a token on a non-loopback address anyway.
    allow_open_writes: bool = False
    max_file_mb: float = 32.0
    max_request_mb: float = 256.0
    max_files: int = 64
    max_pixels: int = 40_000_000
    max_query_chars: int = 1000
    max_k: int = 200
    default_k: int = 24
    # How deep "load more" may page (offset + k), within the index's own limit of 1000.
    max_depth: int = 1000
    thumbnail_size: int = 320
    search_deadline_s: float = 10.0
    upload_deadline_s: float = 120.0
    # What a 503/429 tells clients to wait before retrying.
    retry_after_s: int = 2
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """Build from GATEWAY_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"GATEWAY_{f.name.upper()}"
            if name in env and env[name].strip() != "":
                values[f.name] = _parse(name, env[name], type(getattr(cls, f.name)))
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Reject values that cannot work, naming the variable."""
        for name in ("max_file_mb", "max_request_mb", "max_files", "max_pixels", "max_query_chars", "max_k",
                     "default_k", "max_depth", "search_deadline_s", "upload_deadline_s", "retry_after_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"GATEWAY_{name.upper()} must be positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError("GATEWAY_PORT must be between 0 and 65535")
        if self.default_k > self.max_k:
            raise ConfigError("GATEWAY_DEFAULT_K must not exceed GATEWAY_MAX_K")
        if not 1 <= self.max_depth <= 1000:
            raise ConfigError("GATEWAY_MAX_DEPTH must be between 1 and 1000 (the index's limit)")
        if not 0 <= self.thumbnail_size <= 1024:
            raise ConfigError("GATEWAY_THUMBNAIL_SIZE must be between 0 and 1024")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("GATEWAY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        if not self.token and not self.allow_open_writes and not is_loopback(self.host):
            raise ConfigError(f"GATEWAY_HOST={self.host} is not a loopback address: set GATEWAY_TOKEN so strangers "
                              "cannot upload or delete, or GATEWAY_ALLOW_OPEN_WRITES=true to allow it anyway")

    @property
    def max_file_bytes(self) -> int:
        """Largest accepted file, in bytes."""
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        """Largest accepted request body, in bytes."""
        return int(self.max_request_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name that may resolve anywhere


def _parse(name: str, raw: str, kind: type) -> Any:
    parsers: dict[type, Callable[[str], Any]] = {bool: _parse_bool, int: int, float: float, str: str}
    try:
        return parsers[kind](raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)
