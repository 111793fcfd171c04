"""Settings from the environment, and the provider choice made without a GPU."""

from __future__ import annotations

import pytest

from embedder_service.config import EmbedderConfig
from embedder_service.model import CPU, CUDA, ProviderError, candidate_providers, check_active
from semsearch_common.config import ConfigError


def test_defaults_bind_loopback() -> None:
    config = EmbedderConfig.from_env({})
    assert config.host == "127.0.0.1" and config.provider == "auto"
    assert config.max_receive_mb >= 64


def test_values_are_parsed_by_type() -> None:
    config = EmbedderConfig.from_env({"EMBEDDER_PORT": "6000", "EMBEDDER_JPEG_DRAFT": "yes",
                                      "EMBEDDER_MAX_WAIT_MS": "1.5", "EMBEDDER_PROVIDER": "cpu"})
    assert (config.port, config.jpeg_draft, config.max_wait_ms, config.provider) == (6000, True, 1.5, "cpu")


def test_blank_means_default_for_every_type() -> None:
    blank = {f"EMBEDDER_{name}": " " for name in ("PORT", "JPEG_DRAFT", "MAX_WAIT_MS", "PROVIDER", "LOG_FORMAT")}
    assert EmbedderConfig.from_env(blank) == EmbedderConfig()
    # A blank bool used to mean false; it now means the default, as everywhere.
    assert EmbedderConfig.from_env({"EMBEDDER_JPEG_DRAFT": ""}).jpeg_draft is EmbedderConfig.jpeg_draft


def test_threads_spin_briefly_unless_told_otherwise() -> None:
    assert EmbedderConfig().spin_us == 50 and EmbedderConfig.from_env({"EMBEDDER_SPIN_US": "0"}).spin_us == 0


def test_log_format_drain_and_level() -> None:
    config = EmbedderConfig.from_env({"EMBEDDER_LOG_FORMAT": "JSON", "EMBEDDER_DRAIN_S": "1.5",
                                      "EMBEDDER_LOG_LEVEL": "debug"})
    assert (config.log_format, config.drain_s, config.log_level) == ("json", 1.5, "DEBUG")
    assert EmbedderConfig().drain_s == 0 and EmbedderConfig().log_format == "text"


@pytest.mark.parametrize(("env", "named"), [
    ({"EMBEDDER_PORT": "http"}, "EMBEDDER_PORT"),
    ({"EMBEDDER_PROVIDER": "tpu"}, "EMBEDDER_PROVIDER"),
    ({"EMBEDDER_MAX_BATCH": "0"}, "EMBEDDER_MAX_BATCH"),
    ({"EMBEDDER_JPEG_DRAFT": "maybe"}, "EMBEDDER_JPEG_DRAFT"),
    ({"EMBEDDER_LOG_FORMAT": "xml"}, "EMBEDDER_LOG_FORMAT"),
    ({"EMBEDDER_LOG_LEVEL": "loud"}, "EMBEDDER_LOG_LEVEL"),
    ({"EMBEDDER_DRAIN_S": "-1"}, "EMBEDDER_DRAIN_S"),
    ({"EMBEDDER_SPIN_US": "-5"}, "EMBEDDER_SPIN_US"),
    ({"EMBEDDER_SPIN": "1"}, "EMBEDDER_SPIN is no longer read: set EMBEDDER_SPIN_US"),
    ({"EMBEDDER_PORT": "70000"}, "EMBEDDER_PORT"),
])
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        EmbedderConfig.from_env(env)


def test_auto_prefers_cuda_only_when_the_build_has_it() -> None:
    assert candidate_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert candidate_providers("auto", [CPU]) == [CPU]
    assert candidate_providers("cpu", [CUDA, CPU]) == [CPU]


def test_explicit_cuda_without_the_provider_fails_with_a_reason() -> None:
    with pytest.raises(ProviderError, match="no CUDA provider"):
        candidate_providers("cuda", [CPU])


def test_explicit_cuda_that_silently_fell_back_fails() -> None:
    # onnxruntime-gpu lists CUDA even without the CUDA libraries; the session then runs on the CPU.
    with pytest.raises(ProviderError, match="could not run on CUDA"):
        check_active("cuda", [CPU])
    check_active("cuda", [CUDA, CPU])
    check_active("auto", [CPU])
