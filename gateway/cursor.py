"""Cursors for "load more": the next page's index request, signed, so that no page embeds or re-reads again.

A cursor is base64url(version, kind, flags, serialized SearchRequest or SearchSimilarRequest, HMAC-SHA256 tag).
The request is the one the first page sent (query vector, model id, collection, filters, sort, floor)
with k and offset set for the next page, so every field a route puts into it rides along unchanged.
Self-contained rather than kept in a server-side cache: any gateway replica that shares the key
(GATEWAY_CURSOR_KEY) can serve the next page, and the tag makes a forged or cut vector a clean 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from google.protobuf.message import DecodeError

from protos.semsearch.v1 import index_pb2

VERSION = 1
TAG_BYTES = 16  # 128 bits: forging one takes 2**128 tries
KINDS: dict[int, type[index_pb2.SearchRequest] | type[index_pb2.SearchSimilarRequest]] = {
    1: index_pb2.SearchRequest, 2: index_pb2.SearchSimilarRequest}
TRUNCATED = 1  # flag: the words of the first page were cut to the model's context
PageRequest = index_pb2.SearchRequest | index_pb2.SearchSimilarRequest


class CursorError(ValueError):
    """A cursor that this gateway did not make, or that was changed or cut."""


class Signer:
    """Makes and checks cursors with one key (random per process when none is configured)."""

    def __init__(self, key: str = "") -> None:
        secret = key.encode() if key else secrets.token_bytes(32)
        # A key of its own purpose, so the configured string could serve elsewhere without the tags matching.
        self._key = hashlib.sha256(b"semsearch gateway cursor\0" + secret).digest()

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:TAG_BYTES]

    def encode(self, request: PageRequest, truncated: bool = False) -> str:
        """The cursor of a request (k and offset already set for the page it asks for)."""
        kind = next(n for n, cls in KINDS.items() if isinstance(request, cls))
        body = bytes([VERSION, kind, TRUNCATED if truncated else 0]) + request.SerializeToString(deterministic=True)
        return _text(body + self._tag(body))

    def decode(self, cursor: str) -> tuple[PageRequest, bool]:
        """The request a cursor holds and its truncated flag; CursorError when it is not one of ours, intact."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise CursorError("not a cursor (it is not base64url)") from None
        if _text(raw) != cursor:  # the last character's spare bits changed: not the text we gave out
            raise CursorError("this cursor was changed")
        body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if len(body) < 3 or not hmac.compare_digest(tag, self._tag(body)):
            raise CursorError("this cursor was changed, cut, or made by a gateway with another key")
        if body[0] != VERSION or body[1] not in KINDS:
            raise CursorError("this cursor is of another version")
        request = KINDS[body[1]]()
        try:
            request.ParseFromString(body[3:])
        except DecodeError:
            raise CursorError("this cursor does not hold a request") from None
        return request, bool(body[2] & TRUNCATED)


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
