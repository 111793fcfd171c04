"""The rules a tag obeys at the gateway (the index's own, checked first so a bad tag is a 400 that names its field)."""

from __future__ import annotations

import unicodedata

from gateway.errors import ApiError

MAX_TAG_CHARS = 100  # UpsertItem.tags: each 1..100 characters after trimming
MAX_TAGS = 64  # UpsertItem.tags: at most 64 per image; the gateway holds any one list of tags to it too


def clean(field: str, values: list[str], allow_empty: bool = False) -> list[str]:
    """Trimmed, de-duplicated tags in their first order; a 400 naming `field` for any bad one.

    `allow_empty` drops blank values (an HTML form's empty input) instead of refusing them.
    """
    out: list[str] = []
    for raw in values:
        # NUL cannot be stored by Postgres, and no control character (tab and newline included, even at
        # an end, where trimming would hide it) is ever meant in a tag: refuse it, so the caller learns of it.
        if any(unicodedata.category(c) == "Cc" for c in raw):
            raise ApiError(400, f"{field}: the tag {raw[:40]!r} contains control characters")
        tag = raw.strip()
        if not tag:
            if allow_empty:
                continue
            raise ApiError(400, f"{field}: a tag is empty")
        if len(tag) > MAX_TAG_CHARS:
            raise ApiError(400, f"{field}: a tag is {len(tag)} characters; at most {MAX_TAG_CHARS}")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ApiError(400, f"{field}: {len(out)} tags; at most {MAX_TAGS}")
    return out
