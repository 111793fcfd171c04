"""The CLIP tokenizer against 309 reference cases, plus truncation, batching and hostile text."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from embedder_service.tokenizer import ClipTokenizer

CLIP_DIR = Path(__file__).resolve().parents[3] / "shared" / "clip"
VOCAB = CLIP_DIR / "bpe_simple_vocab_16e6.txt.gz"
CASES = json.loads((CLIP_DIR / "tokenizer_reference.json").read_text())["cases"]
SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return ClipTokenizer(VOCAB)


def test_reference_has_all_cases() -> None:
    assert len(CASES) == 309


@pytest.mark.parametrize("case", CASES, ids=lambda c: repr(c["text"][:40]))
def test_matches_reference(tok: ClipTokenizer, case: dict) -> None:
    assert tok.encode(case["text"]) == case["bpe_ids"]
    ids, truncated = tok.tokenize(case["text"])
    padded = ids + [0] * (77 - len(ids))
    assert padded == case["ids_77"]
    assert truncated == (len(case["bpe_ids"]) > 75)


def test_special_ids_and_vocab_size(tok: ClipTokenizer) -> None:
    assert (tok.sot_id, tok.eot_id, tok.vocab_size) == (SOT, EOT, 49408)
    assert tok.encode("<|endoftext|>") == [EOT]


@pytest.mark.parametrize("text", ["", "   ", "\t\n\r ", "\u3000\xa0"])
def test_empty_text_gives_start_and_end(tok: ClipTokenizer, text: str) -> None:
    assert tok.encode(text) == []
    assert tok.tokenize(text) == ([SOT, EOT], False)


def test_truncation_keeps_end_token_last(tok: ClipTokenizer) -> None:
    assert len(tok.encode("a " * 75)) == 75
    assert tok.tokenize("a " * 75) == ([SOT, *[320] * 75, EOT], False)
    ids, truncated = tok.tokenize("a " * 76)
    assert truncated and len(ids) == 77 and ids[0] == SOT and ids[-1] == EOT and ids[-2] == 320
    ids, truncated = tok.tokenize("word " * 5000)
    assert truncated and len(ids) == 77 and ids[-1] == EOT


def test_custom_context_length() -> None:
    short = ClipTokenizer(VOCAB, context_length=5)
    assert short.tokenize("a photo of a cat") == ([SOT, 320, 1125, 539, EOT], True)
    assert short.tokenize("a cat") == ([SOT, 320, 2368, EOT], False)
    with pytest.raises(ValueError):
        ClipTokenizer(VOCAB, context_length=1)


def test_batch_pads_to_longest_row(tok: ClipTokenizer) -> None:
    ids, lengths, truncated = tok.batch(["dog", "a photo of a cat", "", "x " * 100])
    assert ids.dtype == np.int64 and ids.shape == (4, 77)
    assert lengths == [3, 7, 2, 77] and truncated == [False, False, False, True]
    assert ids[1, :7].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT]
    assert (ids[0, 3:] == 0).all() and (ids[2, 2:] == 0).all()

    short, lengths, _ = tok.batch(["dog", "a photo of a cat"])
    assert short.shape == (2, 7), "a short batch must not pay for 77 positions"
    assert short[0].tolist() == [SOT, 1929, EOT, 0, 0, 0, 0]


def test_empty_batch(tok: ClipTokenizer) -> None:
    ids, lengths, truncated = tok.batch([])
    assert ids.shape == (0, 0) and ids.dtype == np.int64 and lengths == [] and truncated == []


def test_hostile_unicode_does_not_crash(tok: ClipTokenizer) -> None:
    rng = random.Random(7)
    samples = [
        "\x00\x01\x7f\x1b[31m",
        "\ud800 lone surrogate",
        "🏳️‍🌈👨‍👩‍👧‍👦 family",
        "e\u0301\u0302\u0303 combining",
        "\U0010ffff\ufffe\ufeff",
        "ǅ İstanbul ﬁ ß",
        "".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(500)),
    ]
    for text in samples:
        ids, _ = tok.tokenize(text)
        assert ids[0] == SOT and ids[-1] == EOT and len(ids) <= 77
        assert all(0 <= i < tok.vocab_size for i in ids)


def test_every_byte_is_encodable(tok: ClipTokenizer) -> None:
    # The byte-level alphabet means no character is ever unknown: each non-space one yields some ids.
    for ch in ["é", "日", "🐱", "\u0378", "\x85"]:
        assert tok.encode(f"x{ch}y") or ch.isspace()


def test_short_query_is_fast(tok: ClipTokenizer) -> None:
    query = "a photo of a dog on the beach"
    tok.encode(query)
    start = time.perf_counter()
    for _ in range(200):
        tok.encode(query)
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 1e-3, f"{per_call * 1e6:.0f} µs per short query"
