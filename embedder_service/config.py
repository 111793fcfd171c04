"""Embedder settings, read once from EMBEDDER_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

PROVIDERS = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A setting has a bad value; the message names the variable."""


@dataclass(frozen=True)
class EmbedderConfig:
    """Every knob of the embedder; each field is EMBEDDER_<FIELD> in the environment."""

    model_dir: str = ""
    host: str = "127.0.0.1"
    port: int = 50051
    # auto = CUDA when a session really runs on it, else CPU; cuda = fail start-up without it.
    provider: str = "auto"
    # ONNX Runtime intra-op threads; 0 = one per core.
    threads: int = 0
    # Threads that decode and preprocess images beside inference; 0 = one per core.
    decode_workers: int = 0
    max_batch: int = 32
    # How long the batcher waits for more work before running a partial batch.
    max_wait_ms: float = 2.0
    # Items waiting for inference before new work gets RESOURCE_EXHAUSTED.
    queue_limit: int = 1024
    max_images_per_request: int = 256
    max_texts_per_request: int = 1024
    max_text_chars: int = 10_000
    max_pixels: int = 40_000_000
    max_image_bytes: int = 64 * 1024 * 1024
    max_receive_mb: int = 128
    # Decode big JPEGs at a reduced DCT scale; see bench/draft_mode.py for why it is off.
    jpeg_draft: bool = False
    thumbnail_max: int = 1024
    metrics_port: int = 0
    grace_s: float = 5.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmbedderConfig:
        """Build from EMBEDDER_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"EMBEDDER_{f.name.upper()}"
            if name in env:
                values[f.name] = _parse(name, env[name], type(getattr(cls, f.name)))
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Reject values that cannot work, naming the variable."""
        if self.provider not in PROVIDERS:
            raise ConfigError(f"EMBEDDER_PROVIDER must be one of {', '.join(PROVIDERS)}, not {self.provider!r}")
        for name in ("max_batch", "queue_limit", "max_images_per_request", "max_texts_per_request",
                     "max_pixels", "max_image_bytes", "max_receive_mb", "max_text_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"EMBEDDER_{name.upper()} must be at least 1")
        for name in ("port", "metrics_port", "threads", "decode_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"EMBEDDER_{name.upper()} must not be negative")
        if self.max_wait_ms < 0:
            raise ConfigError("EMBEDDER_MAX_WAIT_MS must not be negative")


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
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)
