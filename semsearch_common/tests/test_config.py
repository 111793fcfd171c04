"""One environment parser: prefix, types, ranges, choices, and blank meaning the default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from semsearch_common.config import ConfigError, Env


@dataclass(frozen=True)
class Knobs:
    host: str = "127.0.0.1"
    port: int = 50051
    ratio: float = 0.5
    verbose: bool = False
    mode: str = "auto"


def test_unset_and_blank_values_keep_the_default() -> None:
    env = Env("svc", {"SVC_PORT": "", "SVC_RATIO": "   "})
    assert env.int("port", 7) == 7 and env.float("ratio", 0.25) == 0.25 and env.bool("verbose", True)
    assert env.str("host", "h") == "h"


def test_values_are_parsed_by_type_and_stripped() -> None:
    env = Env("SVC_", {"SVC_PORT": " 9000 ", "SVC_RATIO": "0.75", "SVC_VERBOSE": "Yes", "SVC_MODE": "CPU",
                       "SVC_DIR": "~/x"})
    assert env.int("port", 1, 0, 65535) == 9000
    assert env.float("ratio", 0.0, 0, 1) == 0.75
    assert env.bool("verbose", False) is True
    assert env.str("mode", "auto", ("auto", "cpu", "cuda")) == "cpu"
    assert env.path("dir", Path(".")) == (Path.home() / "x").resolve()


@pytest.mark.parametrize(("key", "raw", "message"), [
    ("port", "abc", "SVC_PORT='abc': expected an integer"),
    ("port", "70000", "SVC_PORT='70000': must be between 0 and 65535"),
    ("ratio", "nan", "SVC_RATIO='nan': expected a finite number"),
    ("ratio", "-1", "SVC_RATIO='-1': must be between 0 and 1"),
    ("verbose", "maybe", "SVC_VERBOSE='maybe': expected true or false"),
    ("mode", "gpu", "SVC_MODE='gpu': expected one of auto, cpu, cuda"),
])
def test_a_bad_value_names_the_variable(key: str, raw: str, message: str) -> None:
    env = Env("SVC", {f"SVC_{key.upper()}": raw})
    with pytest.raises(ConfigError) as caught:
        env.fill(Knobs, bounds={"port": (0, 65535), "ratio": (0.0, 1.0)}, choices={"mode": ("auto", "cpu", "cuda")})
    assert str(caught.value) == message


def test_fill_reads_every_field_by_the_type_of_its_default() -> None:
    knobs = Env("SVC", {"SVC_HOST": "0.0.0.0", "SVC_PORT": "1", "SVC_RATIO": "2", "SVC_VERBOSE": "on"}).fill(Knobs)
    assert knobs == Knobs(host="0.0.0.0", port=1, ratio=2.0, verbose=True, mode="auto")
    assert isinstance(knobs.ratio, float)
