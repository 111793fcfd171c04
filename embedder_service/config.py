"""Embedder settings, read once from EMBEDDER_* environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from semsearch_common.config import ConfigError, Env
from semsearch_common.logs import FORMATS, LEVELS

PROVIDERS = ("auto", "cpu", "cuda")
# Lower bounds (and the port's upper one) of the numeric settings; the rest take any value of their type.
BOUNDS = {
    **{name: (1, None) for name in ("max_batch", "queue_limit", "max_images_per_request", "max_texts_per_request",
                                    "max_pixels", "max_image_bytes", "max_receive_mb", "max_text_chars")},
    **{name: (0, None) for name in ("threads", "decode_workers", "max_wait_ms", "thumbnail_max", "grace_s",
                                    "drain_s", "spin_us")},
    "port": (0, 65535),
    "metrics_port": (0, 65535),
}
CHOICES = {"provider": PROVIDERS, "log_level": LEVELS, "log_format": FORMATS}
# Variables that settings replaced, and what replaced them: set, they stop the start instead of being ignored.
RETIRED = {"spin": "EMBEDDER_SPIN_US (microseconds a thread spins before it sleeps; 0 = never spins)"}

__all__ = ["ConfigError", "EmbedderConfig"]


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
    # Seconds between reporting NOT_SERVING and refusing new calls on SIGTERM, so balancers look elsewhere first.
    drain_s: float = 0.0
    log_level: str = "INFO"
    log_format: str = "text"
    # Microseconds an ONNX Runtime worker thread spins waiting for the next operator before it sleeps; 0 =
    # sleep at once. One image is some 400 operators, and threads that sleep between them wake late: one
    # client's int8 images/s over gRPC were 43 sleeping, 52 spinning up to 50 us, 55 spinning without a
    # bound. Beside one busy thread on the 2 cores the bound matters: the int8 tower took 26 ms sleeping,
    # 29-39 spinning up to 20-500 us, 38-43 unbounded (bench/README.md, issue 14).
    spin_us: int = 50

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmbedderConfig:
        """Build from EMBEDDER_* variables; unset or blank ones keep their defaults, bad ones raise ConfigError."""
        variables = Env("EMBEDDER", env)
        for old, new in RETIRED.items():
            if variables.raw(old) is not None:
                raise ConfigError(f"{variables.name(old)} is no longer read: set {new} instead")
        return variables.fill(cls, bounds=BOUNDS, choices=CHOICES)
