"""Contract enums <-> the lower-case words of the HTTP API, logs and the domain code ("ready", "pgvector", "fp32")."""

from __future__ import annotations

import re

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper


def _prefix(enum: EnumTypeWrapper) -> str:
    """buf's value prefix of an enum: IndexState -> "INDEX_STATE_"."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"


def enum_value(enum: EnumTypeWrapper, word: str) -> int:
    """The number of a word, e.g. enum_value(IndexState, "ready") == INDEX_STATE_READY; ValueError if unknown."""
    return enum.Value(_prefix(enum) + word.upper())


def enum_word(enum: EnumTypeWrapper, number: int) -> str:
    """The word of a number, e.g. "ready"; "unknown" for a number this code does not know (a newer server)."""
    try:
        name = enum.Name(number)
    except ValueError:
        return "unknown"
    return name.removeprefix(_prefix(enum)).lower()
