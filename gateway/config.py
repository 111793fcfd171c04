"""Gateway settings, read once from GATEWAY_* environment variables."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from semsearch_common.config import ConfigError, Env
from semsearch_common.logs import FORMATS, LEVELS

__all__ = ["ConfigError", "GatewayConfig", "is_loopback"]


# Integer settings and their ranges (the float ones must be positive: check()).
BOUNDS = {
    "port": (0, 65535),
    "max_files": (1, None),
    "max_pixels": (1, None),
    "max_query_chars": (1, None),
    "max_k": (1, None),
    "default_k": (1, None),
    "max_depth": (1, 1000),  # the index's own limit on k
    "thumbnail_size": (0, 1024),
    "retry_after_s": (1, None),
    "max_connections": (1, None),
}


@dataclass(frozen=True)
class GatewayConfig:
    """Every knob of the gateway; each field is GATEWAY_<FIELD> in the environment."""

    host: str = "127.0.0.1"
    port: int = 8080
    embedder_addr: str = "127.0.0.1:50051"
    index_addr: str = "127.0.0.1:50052"
    # Bearer token for the write endpoints (upload, delete); empty = open.
    token: str = field(default="", repr=False)  # kept out of logs
    # Key that signs search cursors (`next`); replicas behind one address must share it. Empty = a random key
    # per process: cursors then stop working after a restart or on another replica (a 400: search again).
    cursor_key: str = field(default="", repr=False)  # kept out of logs
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
    # How long an image download may wait for the index to start sending (the bytes then have the upload's).
    download_deadline_s: float = 10.0
    # A request's line and headers must be in within this long, and each piece of its body within the next.
    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    # Open HTTP connections at most; more are answered 503 and closed.
    max_connections: int = 4096
    # What a 503/429 tells clients to wait before retrying.
    retry_after_s: int = 2
    log_level: str = "INFO"
    # "text" lines for people, "json" lines for log collectors.
    log_format: str = "text"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """Build from GATEWAY_* variables; unset or blank ones keep their defaults."""
        config = Env("GATEWAY", env).fill(cls, bounds=BOUNDS, choices={"log_level": LEVELS, "log_format": FORMATS})
        config.check()
        return config

    def check(self) -> None:
        """Reject values that cannot work, naming the variable."""
        for name in ("max_file_mb", "max_request_mb", "search_deadline_s", "upload_deadline_s", "download_deadline_s",
                     "header_timeout_s", "body_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"GATEWAY_{name.upper()} must be positive")
        if self.default_k > self.max_k:
            raise ConfigError("GATEWAY_DEFAULT_K must not exceed GATEWAY_MAX_K")
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
