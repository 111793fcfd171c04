"""The query language: a table of queries and their parts, a table of refused ones and where, and the combination."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.query import MAX_PARTS, Part, QueryError, combine, parse


def P(text: str, weight: float = 1.0, negative: bool = False, position: int = 0) -> Part:
    return Part(text, weight, negative, position)


@pytest.mark.parametrize(("query", "parts"), [
    # A plain phrase is one part, exactly as typed between its first and last letter.
    ("a dog on a beach", [P("a dog on a beach")]),
    ("  a  red   car ", [P("a  red   car", position=2)]),
    ("t-shirt x-ray well-known", [P("t-shirt x-ray well-known")]),
    ("pre- war", [P("pre- war")]),
    ("c++ rock'n'roll sunset+mountains", [P("c++ rock'n'roll sunset+mountains")]),
    ("dog:abc?", None),  # an unquoted colon is always the weight operator (refused below)
    # Subtracting: one word or one quoted phrase, with or without a space after the minus.
    ("beach -people", [P("beach"), P("people", negative=True, position=6)]),
    ("beach - people", [P("beach"), P("people", negative=True, position=6)]),
    ("beach -people sunset", [P("beach"), P("people", negative=True, position=6), P("sunset", position=14)]),
    ("-night city", [P("night", negative=True), P("city", position=7)]),
    ('"red car" -night', [P("red car"), P("night", negative=True, position=10)]),
    ('sunset -"red car"', [P("sunset"), P("red car", negative=True, position=7)]),
    ("-t-shirt dress", [P("t-shirt", negative=True), P("dress", position=9)]),
    # Combining: + ends the part before it.
    ("sunset + mountains", [P("sunset"), P("mountains", position=7)]),
    ("sunset +snowy mountains", [P("sunset"), P("snowy mountains", position=7)]),
    ("+sunset", [P("sunset")]),
    # Weights end the part they follow.
    ("dog:2 cat", [P("dog", 2.0), P("cat", position=6)]),
    ("red car:0.5 night", [P("red car", 0.5), P("night", position=12)]),
    ('"red car":3', [P("red car", 3.0)]),
    ('-"people":1.5 beach', [P("people", 1.5, True), P("beach", position=14)]),
    ("-people:.25 beach", [P("people", 0.25, True), P("beach", position=12)]),
    ("dog:100 cat:0.01", [P("dog", 100.0), P("cat", 0.01, position=8)]),
    ("dog:2.", [P("dog", 2.0)]),
    ("12:30 sunset", [P("12", 30.0), P("sunset", position=6)]),  # documented: quote a colon to keep it
    # Quotes: straight or curly (as phones type them); operators inside are letters.
    ("\u201cred car\u201d -night", [P("red car"), P("night", negative=True, position=10)]),
    ('"12:30 -5 + x"', [P("12:30 -5 + x")]),
    ('"  padded  "', [P("padded")]),
    ('beach"sunset"', [P("beach"), P("sunset", position=5)]),
])
def test_parts_of_a_query(query: str, parts: list[Part] | None) -> None:
    if parts is None:
        with pytest.raises(QueryError):
            parse(query)
    else:
        assert parse(query) == parts


@pytest.mark.parametrize(("query", "position", "words"), [
    ("-people", 0, "something to look for"),
    ("-people -cars", 0, "something to look for"),
    ("  -a -b", 2, "something to look for"),
    ("dog:", 3, "weight is missing"),
    ("dog: cat", 3, "weight is missing"),
    ("dog:0", 3, "from 0.01 to 100"),
    ("dog:-1", 3, "from 0.01 to 100"),
    ("dog:1e9", 3, "from 0.01 to 100"),
    ("dog:1000000000", 3, "from 0.01 to 100"),
    ("dog:100.5", 3, "from 0.01 to 100"),
    ("dog:nan", 3, "from 0.01 to 100"),
    ("dog:inf", 3, "from 0.01 to 100"),
    ("dog:0.001", 3, "from 0.01 to 100"),
    ("dog:2:3", 3, "from 0.01 to 100"),
    ("cat :2", 4, "no space before"),
    ('"red car" :2', 10, "no space before"),
    ('a "red car', 2, "never closed"),
    ('a "red" car"', 11, "never closed"),
    ('beach ""', 6, "empty quotes"),
    ('beach "   "', 6, "empty quotes"),
    ("beach -", 6, "nothing after it"),
    ("beach +", 6, "nothing after it"),
    ("beach --people", 7, "one operator per term"),
    ("beach - + people", 8, "one operator per term"),
    ("beach -+people", 7, "one operator per term"),
    # The 17th part starts at the "+" before it.
    (" + ".join(f"w{i}" for i in range(100)), sum(len(f"w{i} + ") for i in range(MAX_PARTS)) - 2,
     "at most 16 parts"),
    (" ".join(f"w{i}:2" for i in range(MAX_PARTS + 1)), sum(len(f"w{i}:2 ") for i in range(MAX_PARTS)),
     "at most 16 parts"),
])
def test_refused_queries_name_the_position(query: str, position: int, words: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse(query)
    assert caught.value.position == position, str(caught.value)
    assert words in str(caught.value) and f"at position {position}" in str(caught.value)


def test_sixteen_parts_are_allowed() -> None:
    assert len(parse(" + ".join(f"w{i}" for i in range(MAX_PARTS)))) == MAX_PARTS


def test_with_an_image_the_words_may_only_subtract_or_be_absent() -> None:
    assert parse("-night", image=True) == [P("night", negative=True)]
    assert parse("   ", image=True) == []
    with pytest.raises(QueryError):
        parse("   ")


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_the_combination_is_the_normalised_weighted_sum_of_unit_vectors() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(4, 64)) * np.array([[1.0], [3.0], [0.2], [5.0]])  # of other lengths on purpose
    weights = [2.0, 1.0, -0.5, -1.5]
    expected = unit(sum(w * unit(v) for w, v in zip(weights, vectors, strict=True)))
    got = np.asarray(combine(weights, vectors.tolist(), [0, 5, 9, 14]))
    assert got.dtype == np.float64 and got.shape == (64,)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert abs(np.linalg.norm(got) - 1) < 1e-6


@pytest.mark.parametrize(("weights", "vectors", "position"), [
    ([1.0, -1.0], [[1.0, 0.0], [2.0, 0.0]], 6),  # dog -dog
    ([2.0, -1.0, -1.0], [[0.0, 1.0], [0.0, 3.0], [0.0, 1.0]], 6),  # dog:2 -dog -dog
    ([1.0, 1.0], [[1.0, 0.0], [-1.0, 1e-6]], 6),  # opposite added parts: the last one is named
    ([1.0, -1.0], [[0.0, 0.0], [1.0, 0.0]], 0),  # a part without direction
])
def test_a_combination_with_nothing_left_is_refused(weights: list[float], vectors: list[list[float]],
                                                    position: int) -> None:
    positions = [0, 6, 12][:len(weights)]
    with pytest.raises(QueryError) as caught:
        combine(weights, vectors, positions)
    assert caught.value.position == position


def test_a_nearly_cancelled_combination_still_has_its_direction() -> None:
    got = combine([1.0, -0.99], [[1.0, 0.0], [0.0, 1.0]], [0, 4])
    np.testing.assert_allclose(got, unit(np.array([1.0, -0.99])), atol=1e-6)
    assert np.isfinite(got).all()
