"""The services' published request limits, fetched once in a while, with a safe fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf.message import Message

log = logging.getLogger(__name__)
MB = 1024 * 1024
# Limits can change when a service restarts with other settings: ask again after this long.
TTL_S = 60.0


@dataclass(frozen=True)
class Limits:
    """What one call to the services may carry."""

    max_images: int  # images in one EmbedImages and one Upsert request
    max_message_bytes: int  # request message size both services accept


# Used while a service does not publish a limit (or cannot be asked): at or below every default.
FALLBACK = Limits(max_images=32, max_message_bytes=32 * MB)


def published(message: Message, field: str) -> int:
    """A limit field of a ModelInfo or StatsResponse; 0 when the service does not publish it."""
    # TODO(contract): read ModelInfo.max_images_per_request / max_message_bytes and StatsResponse.max_upsert_items
    # / max_message_bytes directly once the limit fields are in the protos; getattr keeps older ones working.
    return int(getattr(message, field, 0) or 0)


def of_services(model_info: Message, stats: Message) -> Limits:
    """The tighter of the embedder's (ModelInfo) and the index's (StatsResponse) limits."""
    return Limits(
        max_images=_tightest([published(model_info, "max_images_per_request"), published(stats, "max_upsert_items")],
                             FALLBACK.max_images),
        max_message_bytes=_tightest([published(model_info, "max_message_bytes"), published(stats, "max_message_bytes")],
                                    FALLBACK.max_message_bytes))


def _tightest(values: list[int], fallback: int) -> int:
    # An unpublished limit (0) may be anything down to the fallback.
    known = [n for n in values if n]
    return min(known) if len(known) == len(values) else min([fallback, *known])


class LimitsCache:
    """Fetches the limits at most once per TTL_S; after a failed fetch, the last known ones (or FALLBACK) serve."""

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._value: Limits | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self, fetch: Callable[[], Awaitable[Limits]]) -> Limits:
        """The cached limits, or those `fetch` answers when the cache is empty or old."""
        async with self._lock:  # one fetch for a burst of uploads, not one each
            if self._value is not None and time.monotonic() - self._at < self.ttl_s:
                return self._value
            try:
                self._value, self._at = await fetch(), time.monotonic()
            except Exception as err:  # the upload itself will meet and report the outage
                log.debug("service limits unknown (%s); using the fallback", err)
                return self._value or FALLBACK
            return self._value
