"""CLIP's byte-level BPE tokenizer, reproducing the reference token ids exactly.

The algorithm: clean the text (ftfy, HTML entities, whitespace, lower case), split it into words with
CLIP's regular expression, spell each word's UTF-8 bytes in a 256-character printable alphabet, then
merge adjacent symbols greedily by merge rank. The last symbol of a word carries the "</w>" suffix.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import ftfy
import numpy as np
import regex

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
PAD_ID = 0
# The vocabulary file is longer than the model's vocabulary: CLIP uses only the first merges.
_MERGE_COUNT = 49152 - 256 - 2
_WORD_SUFFIX = "</w>"
_WORD_CACHE_SIZE = 1 << 16
_NO_RANK = float("inf")
# Special tokens come first so that literal "<|endoftext|>" in a query maps to its id, as in the reference.
_SPLIT = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_SPACES = regex.compile(r"\s+")


def _byte_alphabet() -> dict[int, str]:
    """Map every byte to one printable character: printable Latin-1 bytes stand for themselves."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]  # "!".."~", "¡".."¬", "®".."ÿ"
    table = {b: chr(b) for b in printable}
    # The other 68 bytes (controls, space, soft hyphen...) borrow characters from U+0100 on, in byte order.
    spare = (chr(256 + n) for n in range(256))
    for b in range(256):
        if b not in table:
            table[b] = next(spare)
    return table


def clean(text: str) -> str:
    """Normalize text the way the reference does before splitting: ftfy, entities, whitespace, lower case."""
    text = ftfy.fix_text(text)
    # Twice, because scraped captions are often double-escaped ("&amp;amp;").
    text = html.unescape(html.unescape(text)).strip()
    spaced: str = _SPACES.sub(" ", text)  # typed here: the regex package ships no stubs
    return spaced.strip().lower()


class ClipTokenizer:
    """Text to CLIP token ids; thread-safe, with a cache of the BPE result of each word."""

    def __init__(self, vocab_path: str | Path, context_length: int = 77) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must leave room for start and end tokens, got {context_length}")
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        # Line 0 is a version header; each following line is one merge "left right", best first.
        merges = [tuple(line.split()) for line in lines[1 : 1 + _MERGE_COUNT]]
        if len(merges) != _MERGE_COUNT or any(len(m) != 2 for m in merges):
            raise ValueError(f"{vocab_path} is not a CLIP BPE vocabulary")
        self._byte_chars = _byte_alphabet()
        # The reference's id order: single symbols by code point, the same with "</w>", merges, specials.
        symbols = sorted(self._byte_chars.values())
        tokens = symbols + [s + _WORD_SUFFIX for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self._ids = {token: i for i, token in enumerate(tokens)}
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.context_length = context_length
        self.sot_id, self.eot_id = self._ids[SOT], self._ids[EOT]
        self.vocab_size = len(tokens)
        # lru_cache is thread-safe and bounded, so hostile input cannot grow memory without limit.
        self._word_ids = lru_cache(maxsize=_WORD_CACHE_SIZE)(self._word_ids_uncached)

    def encode(self, text: str) -> list[int]:
        """Raw BPE ids of text, without start and end tokens."""
        ids: list[int] = []
        for word in _SPLIT.findall(clean(text)):
            ids.extend(self._word_ids(word))
        return ids

    def tokenize(self, text: str) -> tuple[list[int], bool]:
        """[sot, ids..., eot] cut to context_length with eot kept last (not padded), and a truncated flag."""
        ids = [self.sot_id, *self.encode(text), self.eot_id]
        if len(ids) <= self.context_length:
            return ids, False
        ids = ids[: self.context_length]
        ids[-1] = self.eot_id
        return ids, True

    def batch(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int], list[bool]]:
        """int64 [N, L] ids padded with 0 to the longest row of this batch, row lengths, truncated flags."""
        rows = [self.tokenize(text) for text in texts]
        lengths = [len(ids) for ids, _ in rows]
        out = np.full((len(rows), max(lengths, default=0)), PAD_ID, dtype=np.int64)
        for row, (ids, _) in zip(out, rows, strict=True):
            row[: len(ids)] = ids
        return out, lengths, [truncated for _, truncated in rows]

    def _word_ids_uncached(self, word: str) -> tuple[int, ...]:
        if word in (SOT, EOT):
            return (self._ids[word],)
        # ftfy already repairs lone surrogates; "replace" is a backstop so no input can raise here.
        symbols = [self._byte_chars[b] for b in word.encode("utf-8", "replace")]
        symbols[-1] += _WORD_SUFFIX
        return tuple(self._ids[s] for s in self._merge(symbols))

    def _merge(self, symbols: list[str]) -> list[str]:
        """Apply the best-ranked merge everywhere it occurs, repeatedly, until no known pair is left."""
        ranks = self._ranks
        while len(symbols) > 1:
            best = min(pairwise(symbols), key=lambda pair: ranks.get(pair, _NO_RANK))
            if best not in ranks:
                break
            left, right = best
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                # Left to right, so in "a a a" the first two merge and the third is left alone.
                if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

