"""The search box's small language: a query split into weighted parts, and their vectors combined.

Grammar (HELP says it for people; gateway/README.md has the table):
- Words next to each other form one part: `a dog on a beach` is one text, embedded as it stands.
- `-word` or `-"a phrase"` subtracts that one word or phrase; `beach - people` (a lone `-`) does too.
  A `-` inside a word (`t-shirt`, `x-ray`) or at its end is a letter, never an operator.
- `+` (alone or before a word) ends the part before it: `sunset + mountains` is two parts.
- `"…"` quotes a phrase as one part; inside it `-`, `+` and `:` are plain letters. Straight (")
  and curly (“ ”) quotes both work, as phones type them.
- `:w` right after a word or a closing quote weighs the part it ends (`dog:2 cat`, `red car:0.5`,
  `-"people":3`); w is a decimal number from MIN_WEIGHT to MAX_WEIGHT. An unquoted `:` is always this
  operator: quote text that holds a colon (`"12:30"`).
The combined vector is unit(sum of +w·unit(v) for added parts, -w·unit(v) for subtracted ones).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_PARTS = 16  # an embedder batch stays small, and more concepts than this blur into nothing
MIN_WEIGHT, MAX_WEIGHT = 0.01, 100.0
# The combined vector must keep this share of the total weight: `dog -dog` (0) and its near misses
# have no direction left to search for, only noise that normalising would blow up.
MIN_SHARE = 1e-3
QUOTES = '"\u201c\u201d'
WEIGHT = re.compile(r"\d+(\.\d*)?|\.\d+")
WORD_END = re.compile(f"[\\s{QUOTES}]")  # a word runs to the next space or quote
NOT_SPACE = re.compile(r"\S")
HELP = (f'Words together are one phrase. -word (or -"a phrase") subtracts it; "+" separates phrases '
        f'(sunset + mountains); "quotes" keep a phrase whole; word:2 or "a phrase":0.5 weighs the phrase '
        f"it ends ({MIN_WEIGHT:g} to {MAX_WEIGHT:g}); a - inside a word (t-shirt) is a letter. At most "
        f"{MAX_PARTS} phrases, at least one not subtracted. The parts are embedded together, each made unit "
        f"length, weighted, added (subtracted ones taken away) and the sum normalised.")


class QueryError(ValueError):
    """A query that cannot be parsed or combined; position is the character offset it concerns."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position} of the query)")
        self.position = position


@dataclass(frozen=True)
class Part:
    """One concept of a query: its text, weight, sign, and where it starts in the query (operator included)."""

    text: str
    weight: float = 1.0
    negative: bool = False
    position: int = 0

    @property
    def signed_weight(self) -> float:
        """The weight, negative for a subtracted part."""
        return -self.weight if self.negative else self.weight


def weight_of(text: str, position: int) -> float:
    """A weight as typed after ':' (position is the colon's), within MIN_WEIGHT..MAX_WEIGHT."""
    if not text:
        raise QueryError('a weight is missing after ":" (quote the text to keep a colon)', position)
    value = float(text) if WEIGHT.fullmatch(text) else None
    if value is None or not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise QueryError(f'weight "{text}" must be a decimal number from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}',
                         position)
    return value


class _Parser:
    """One pass over the query; parts are appended as their ends are found."""

    def __init__(self, query: str) -> None:
        self.q, self.i = query, 0
        self.parts: list[Part] = []
        self.run: tuple[int, int, int] | None = None  # (part start, text start, text end) of the words so far
        self.sign: tuple[str, int] | None = None  # an operator waiting for its term, and where it stands

    def add(self, part: Part) -> None:
        if len(self.parts) == MAX_PARTS:
            raise QueryError(f"at most {MAX_PARTS} parts in a query", part.position)
        self.parts.append(part)

    def close_run(self, weight: float = 1.0) -> None:
        if self.run is not None:
            start, first, last = self.run
            self.add(Part(self.q[first:last], weight, False, start))
            self.run = None

    def weight_here(self) -> float:
        """The `:w` right at i, if any (i moves past it)."""
        if self.i >= len(self.q) or self.q[self.i] != ":":
            return 1.0
        colon, end = self.i, self._word_end(self.i + 1)
        self.i = end
        return weight_of(self.q[colon + 1:end], colon)

    def _word_end(self, i: int) -> int:
        found = WORD_END.search(self.q, i)
        return found.start() if found else len(self.q)

    def operator(self, c: str) -> None:
        if self.sign is not None:
            raise QueryError(f'"{c}" right after "{self.sign[0]}": one operator per term', self.i)
        self.close_run()
        self.sign = (c, self.i)
        self.i += 1

    def quoted(self) -> None:
        start = self.i
        end = next((j for j in range(start + 1, len(self.q)) if self.q[j] in QUOTES), -1)
        if end < 0:
            raise QueryError("this quote is never closed", start)
        text = self.q[start + 1:end].strip()
        if not text:
            raise QueryError("empty quotes", start)
        self.close_run()
        sign, self.sign = self.sign, None
        self.i = end + 1
        self.add(Part(text, self.weight_here(), sign is not None and sign[0] == "-",
                      sign[1] if sign else start))

    def word(self) -> None:
        start, end = self.i, self._word_end(self.i)
        colon = self.q.find(":", start, end)
        text_end = colon if colon >= 0 else end
        if text_end == start:
            raise QueryError('a weight must follow a word or a closing quote directly (no space before ":")', start)
        sign, self.sign = self.sign, None
        self.i = text_end
        if sign is not None and sign[0] == "-":  # subtracts this one word
            self.add(Part(self.q[start:text_end], self.weight_here(), True, sign[1]))
            return
        if self.run is None:
            self.run = (sign[1] if sign else start, start, text_end)
        else:
            self.run = (self.run[0], self.run[1], text_end)
        if colon >= 0:
            self.close_run(self.weight_here())

    def parse(self) -> list[Part]:
        while True:
            found = NOT_SPACE.search(self.q, self.i)
            if found is None:
                break
            self.i = found.start()
            c = self.q[self.i]
            if c in "+-":
                self.operator(c)
            elif c in QUOTES:
                self.quoted()
            else:
                self.word()
        if self.sign is not None:
            raise QueryError(f'"{self.sign[0]}" has nothing after it', self.sign[1])
        self.close_run()
        return self.parts


def parse(query: str, *, image: bool = False) -> list[Part]:
    """The parts of a query; image=True when an example image is one more added part (then q may be empty)."""
    parts = _Parser(query).parse()
    if not image and not any(not p.negative for p in parts):
        raise QueryError("a query needs something to look for, not only terms to subtract",
                         parts[0].position if parts else 0)
    return parts


def combine(weights: Sequence[float], vectors: Sequence[Sequence[float]], positions: Sequence[int]) -> list[float]:
    """unit(sum of w_i * unit(v_i)) in float32; positions name the parts in errors."""
    m = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if m.ndim != 2 or len(m) != len(w) or not np.isfinite(m).all() or not np.isfinite(w).all():
        raise ValueError("combine needs one finite vector per finite weight")
    norms = np.linalg.norm(m, axis=1)
    if (norms == 0).any():
        raise QueryError("this part has no direction to search for", positions[int(np.argmin(norms))])
    total = (w[:, None] * (m / norms[:, None])).sum(axis=0)
    length = float(np.linalg.norm(total))
    if length < MIN_SHARE * float(np.abs(w).sum()):
        negative = [p for p, x in zip(positions, w, strict=True) if x < 0]
        raise QueryError("the parts cancel each other out, leaving nothing to search for; change or reweigh this "
                         "subtracted part", negative[0] if negative else positions[-1])
    return [float(x) for x in (total / length).astype(np.float32)]
