"""Settings of the index service, read once from INDEX_… environment variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# libpq reads these itself; any of them set means "use that server, not an embedded one".
LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


class ConfigError(ValueError):
    """A bad setting; the message names the variable."""


@dataclass(frozen=True)
class HnswParams:
    """HNSW build and search parameters (ef: lantern's index ef, pgvector's hnsw.ef_search)."""

    m: int = 16
    ef_construction: int = 64
    ef: int = 100


@dataclass(frozen=True)
class Config:
    """Every knob of the service; see index_service/README.md for the variables."""

    host: str = "127.0.0.1"
    port: int = 50052
    dsn: str | None = None  # None: embedded Postgres under data_dir
    data_dir: Path = Path("data/index")
    backend: str = "auto"
    dim: int = 512
    hnsw: HnswParams = field(default_factory=HnswParams)
    defer_index: bool = False
    pool_size: int = 8
    workers: int = 16
    max_message_mb: int = 64
    max_k: int = 1000
    max_batch: int = 1024
    norm_tolerance: float = 1e-3
    synchronous_commit: bool = True
    maintenance_work_mem: str = "1GB"
    connect_timeout_s: int = 5
    health_interval_s: float = 2.0
    orphan_grace_s: float = 3600.0
    metrics_port: int = 0
    grace_s: float = 5.0
    pg_port: int = 0
    pg_stop_on_exit: bool = True
    log_level: str = "INFO"

    @property
    def media_dir(self) -> Path:
        """Root of the content-addressed media store."""
        return self.data_dir / "media"

    @property
    def embedded(self) -> bool:
        """Whether the service runs its own Postgres."""
        return self.dsn is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read INDEX_… variables (and libpq PG… variables); raises ConfigError naming a bad one."""
        env = os.environ if env is None else env
        r = _Reader(env)
        dsn = env.get("INDEX_DSN") or None
        if dsn is None and any(env.get(v) for v in LIBPQ_VARS):
            dsn = ""  # an empty DSN makes libpq take everything from PG… variables
        hnsw = HnswParams(
            m=r.int("INDEX_HNSW_M", 16, 2, 100),
            ef_construction=r.int("INDEX_HNSW_EF_CONSTRUCTION", 64, 4, 400),
            ef=r.int("INDEX_HNSW_EF", 100, 1, 400),
        )
        return cls(
            host=r.str("INDEX_HOST", "127.0.0.1"),
            port=r.int("INDEX_PORT", 50052, 0, 65535),
            dsn=dsn,
            data_dir=Path(r.str("INDEX_DATA_DIR", "data/index")).resolve(),
            backend=r.choice("INDEX_BACKEND", "auto", ("auto", "lantern", "pgvector")),
            dim=r.int("INDEX_DIM", 512, 1, 2000),
            hnsw=hnsw,
            defer_index=r.bool("INDEX_DEFER_INDEX", False),
            pool_size=r.int("INDEX_POOL_SIZE", 8, 1, 200),
            workers=r.int("INDEX_WORKERS", 16, 1, 512),
            max_message_mb=r.int("INDEX_MAX_MESSAGE_MB", 64, 4, 2047),
            max_k=r.int("INDEX_MAX_K", 1000, 1, 1000),
            max_batch=r.int("INDEX_MAX_BATCH", 1024, 1, 100_000),
            norm_tolerance=r.float("INDEX_NORM_TOLERANCE", 1e-3, 0.0, 0.5),
            synchronous_commit=r.bool("INDEX_SYNCHRONOUS_COMMIT", True),
            maintenance_work_mem=r.str("INDEX_MAINTENANCE_WORK_MEM", "1GB"),
            connect_timeout_s=r.int("INDEX_CONNECT_TIMEOUT_S", 5, 1, 300),
            health_interval_s=r.float("INDEX_HEALTH_INTERVAL_S", 2.0, 0.05, 3600),
            orphan_grace_s=r.float("INDEX_ORPHAN_GRACE_S", 3600.0, 0.0, 1e9),
            metrics_port=r.int("INDEX_METRICS_PORT", 0, 0, 65535),
            grace_s=r.float("INDEX_GRACE_S", 5.0, 0.0, 3600),
            pg_port=r.int("INDEX_PG_PORT", 0, 0, 65535),
            pg_stop_on_exit=r.bool("INDEX_PG_STOP_ON_EXIT", True),
            log_level=r.choice("INDEX_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _get(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError as err:
            raise ConfigError(f"{name}={raw!r}: {err}") from None

    def str(self, name: str, default: str) -> str:
        return self._get(name, default, lambda s: s)

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        return self._get(name, default, lambda s: _in_range(int(s), lo, hi))

    def float(self, name: str, default: float, lo: float, hi: float) -> float:
        return self._get(name, default, lambda s: _in_range(float(s), lo, hi))

    def bool(self, name: str, default: bool) -> bool:
        def parse(s: str) -> bool:
            low = s.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")

        return self._get(name, default, parse)

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        def parse(s: str) -> str:
            value = s.upper() if options[0].isupper() else s.lower()
            if value not in options:
                raise ValueError(f"expected one of {', '.join(options)}")
            return value

        return self._get(name, default, parse)


def _in_range(value: T, lo: float, hi: float) -> T:
    if not lo <= value <= hi:  # type: ignore[operator]
        raise ValueError(f"must be between {lo} and {hi}")
    return value
