"""Loader settings: one frozen object built from the command line (defaults from LOADER_* variables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loader.sources import Shard
from semsearch_common import logs
from semsearch_common.config import ConfigError, Env

__all__ = ["DEFAULT_EMBEDDER_ADDR", "DEFAULT_INDEX_ADDR", "ConfigError", "LoaderConfig", "LoaderEnv"]

DEFAULT_EMBEDDER_ADDR = "127.0.0.1:50051"
DEFAULT_INDEX_ADDR = "127.0.0.1:50052"


@dataclass(frozen=True)
class LoaderEnv:
    """The LOADER_* variables: defaults of command-line options, and how the log is written."""

    embedder_addr: str = DEFAULT_EMBEDDER_ADDR
    index_addr: str = DEFAULT_INDEX_ADDR
    shard: str = "0/1"
    log_format: str = "text"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoaderEnv:
        """The variables (unset or blank: the default); ConfigError names a bad one."""
        env = Env("LOADER", environ)
        loaded = env.fill(cls, choices={"log_format": logs.FORMATS})
        try:
            Shard.parse(loaded.shard)
        except ValueError as err:
            raise ConfigError(f"{env.name('shard')}={loaded.shard!r}: {err}") from None
        return loaded


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
    # Build the index at the end: None = when this unsharded run stored images (a sharded load leaves it
    # to the index, which builds a deferred index once upserts pause).
    build_index: bool | None = None
    progress_interval_s: float = 10.0
    # The index collection or alias to load into; empty: the alias "default".
    collection: str = ""
    # A folder sync: each upsert also records its file (source, relative path, mtime) in the index.
    record_files: bool = False

    def check(self) -> None:
        """Reject values that cannot work, naming the option."""
        # The upper bound is the embedder's (ModelInfo), checked before the run starts.
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
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

