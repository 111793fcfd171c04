"""The README tells the truth about settings: every variable a service reads is in its one table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from embedder_service.config import EmbedderConfig
from gateway.config import GatewayConfig
from index_service.config import Config as IndexConfig
from loader.config import LoaderEnv

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented() -> set[str]:
    section = README[README.index("## Configuration"):README.index("## Tests")]
    return {name for name in re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`", section)}


def variables(prefix: str, config: type, flatten: tuple[str, ...] = ()) -> set[str]:
    names = set()
    for field in dataclasses.fields(config):
        if field.name in flatten:
            inner = type(getattr(config(), field.name))
            names |= {f"{prefix}_{field.name.upper()}_{f.name.upper()}" for f in dataclasses.fields(inner)}
        else:
            names.add(f"{prefix}_{field.name.upper()}")
    return names


def test_every_service_setting_is_in_the_configuration_table() -> None:
    expected = (variables("EMBEDDER", EmbedderConfig) | variables("GATEWAY", GatewayConfig)
                | variables("INDEX", IndexConfig, flatten=("hnsw",)) | variables("LOADER", LoaderEnv))
    # The index's HNSW parameters are INDEX_HNSW_M, _EF_CONSTRUCTION, _EF (not INDEX_HNSW_HNSW_…).
    missing = sorted(expected - documented())
    assert not missing, f"settings missing from the README's configuration table: {missing}"


def test_the_table_names_no_setting_that_does_not_exist() -> None:
    known = (variables("EMBEDDER", EmbedderConfig) | variables("GATEWAY", GatewayConfig)
             | variables("INDEX", IndexConfig, flatten=("hnsw",))
             | variables("LOADER", LoaderEnv))
    libpq = {name for name in documented() if name.startswith("PG")}
    assert documented() - known - libpq == set()
