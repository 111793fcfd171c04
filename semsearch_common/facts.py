"""Facts more than one service relies on, kept in one place instead of copied."""

from __future__ import annotations

# The model id of rows adopted from the prototype, which recorded no model: the index stores it and
# the loader's pre-flight check lets it sit beside any model.
UNKNOWN_MODEL = "unknown"
