"""Loader settings: one frozen object built from the command line (defaults from LOADER_* variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loader.sources import Shard

DEFAULT_EMBEDDER_ADDR = "127.0.0.1:50051"
DEFAULT_INDEX_ADDR = "127.0.0.1:50052"
# The embedder refuses requests of more than 256 images (EMBEDDER_MAX_IMAGES_PER_REQUEST's default).
MAX_BATCH = 256


class ConfigError(ValueError):
    """A bad setting; the message names the option."""


@dataclass(frozen=True)
class LoaderConfig:
    """Every knob of a run."""

    embedder_addr: str = DEFAULT_EMBEDDER_ADDR
    index_addr: str = DEFAULT_INDEX_ADDR
    source: str = ""
    batch_size: int = 32
    # Batches in each stage at once (reading ahead, inside the embedding stream, waiting to upsert).
    in_flight: int = 4
    upsert_workers: int = 2
    thumbnail_size: int = 256
    # Files above this are skipped ("too large"); batches are also cut at max_batch_mb of originals
    # so that a request stays under the services' message limits.
    max_file_mb: float = 50.0
    max_batch_mb: float = 32.0
    shard: Shard = Shard()
    limit: int = 0
    dry_run: bool = False
    report_path: Path | None = None
    # Deadline of each unary call, and how long a stream may go without an answer.
    timeout_s: float = 60.0
    # How long UNAVAILABLE / DEADLINE_EXCEEDED are retried (with backoff) before the run stops.
    retry_s: float = 300.0
    build_index: bool = False
    progress_interval_s: float = 10.0

    def check(self) -> None:
        """Reject values that cannot work, naming the option."""
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigError(f"--batch-size must be between 1 and {MAX_BATCH}")
        for name in ("in_flight", "upsert_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.thumbnail_size <= 1024:
            raise ConfigError("--thumbnail-size must be between 0 and 1024")
        for name in ("max_file_mb", "max_batch_mb", "timeout_s", "progress_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.retry_s < 0 or self.limit < 0:
            raise ConfigError("--retry-s and --limit must not be negative")
        if not self.dry_run and (not self.embedder_addr or not self.index_addr):
            raise ConfigError("--embedder and --index addresses are required")

    @property
    def max_file_bytes(self) -> int:
        """max_file_mb in bytes."""
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_batch_bytes(self) -> int:
        """max_batch_mb in bytes."""
        return int(self.max_batch_mb * 1024 * 1024)


def env_default(name: str, fallback: str, env: Mapping[str, str] | None = None) -> str:
    """LOADER_<name> from the environment, else the fallback."""
    env = os.environ if env is None else env
    return env.get(f"LOADER_{name}", "").strip() or fallback
