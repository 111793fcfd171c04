"""The text tokenizer against 309 reference cases (CLIP built from the vocabulary, and from its
tokenizer.json), plus truncation, padding rules, clean-up rules and hostile text."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from embedder_service.models.bundle import TextSpec
from embedder_service.tokenizer import TextTokenizer, clip_tokenizer, write_clip_tokenizer

CLIP_DIR = Path(__file__).resolve().parents[3] / "shared" / "clip"
VOCAB = CLIP_DIR / "bpe_simple_vocab_16e6.txt.gz"
CASES = json.loads((CLIP_DIR / "tokenizer_reference.json").read_text())["cases"]
SOT, EOT = 49406, 49407


def clip(context_length: int = 77, **rules: object) -> TextTokenizer:
    return TextTokenizer(clip_tokenizer(VOCAB), TextSpec(context_length=context_length, **rules))  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["vocabulary", "tokenizer.json"])
def tok(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    """Format 1 builds CLIP's BPE from the vocabulary; format 2 loads the tokenizer.json written from it."""
    if request.param == "vocabulary":
        return clip()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    write_clip_tokenizer(VOCAB, path)
    return TextTokenizer(Tokenizer.from_file(str(path)), TextSpec())


def test_reference_has_all_cases() -> None:
    assert len(CASES) == 309


@pytest.mark.parametrize("case", CASES, ids=lambda c: repr(c["text"][:40]))
def test_matches_reference(tok: TextTokenizer, case: dict) -> None:
    assert tok.encode(case["text"]) == case["bpe_ids"][:77]
    ids, truncated = tok.tokenize(case["text"])
    padded = ids + [0] * (77 - len(ids))
    assert padded == case["ids_77"]
    assert truncated == (len(case["bpe_ids"]) > 75)


def test_special_ids_and_vocab_size(tok: TextTokenizer) -> None:
    assert tok.vocab_size == 49408
    assert tok.encode("<|endoftext|>") == [EOT]
    assert tok.encode("<|startoftext|>") == [SOT]


@pytest.mark.parametrize("text", ["", "   ", "\t\n\r ", "\u3000\xa0"])
def test_empty_text_gives_start_and_end(tok: TextTokenizer, text: str) -> None:
    assert tok.encode(text) == []
    assert tok.tokenize(text) == ([SOT, EOT], False)


def test_truncation_keeps_end_token_last(tok: TextTokenizer) -> None:
    assert len(tok.encode("a " * 75)) == 75
    assert tok.tokenize("a " * 75) == ([SOT, *[320] * 75, EOT], False)
    ids, truncated = tok.tokenize("a " * 76)
    assert truncated and len(ids) == 77 and ids[0] == SOT and ids[-1] == EOT and ids[-2] == 320
    ids, truncated = tok.tokenize("word " * 5000)
    assert truncated and len(ids) == 77 and ids[-1] == EOT


def test_custom_context_length() -> None:
    short = clip(context_length=5)
    assert short.tokenize("a photo of a cat") == ([SOT, 320, 1125, 539, EOT], True)
    assert short.tokenize("a cat") == ([SOT, 320, 2368, EOT], False)
    with pytest.raises(ValueError):
        clip(context_length=1)


def test_batch_pads_to_longest_row(tok: TextTokenizer) -> None:
    ids, lengths, truncated = tok.batch(["dog", "a photo of a cat", "", "x " * 100])
    assert ids.dtype == np.int64 and ids.shape == (4, 77)
    assert lengths == [3, 7, 2, 77] and truncated == [False, False, False, True]
    assert ids[1, :7].tolist() == [SOT, 320, 1125, 539, 320, 2368, EOT]
    assert (ids[0, 3:] == 0).all() and (ids[2, 2:] == 0).all()

    short, lengths, _ = tok.batch(["dog", "a photo of a cat"])
    assert short.shape == (2, 7), "a short batch must not pay for 77 positions"
    assert short[0].tolist() == [SOT, 1929, EOT, 0, 0, 0, 0]


def test_max_length_padding_and_mask() -> None:
    fixed = clip(context_length=16, padding="max_length", pad_id=7)
    ids, mask = fixed.pad([[1, 2, 3], [4]])
    assert ids.shape == mask.shape == (2, 16)
    assert ids[0].tolist() == [1, 2, 3] + [7] * 13 and mask[1].tolist() == [1] + [0] * 15


def test_clean_up_rules() -> None:
    text = "  A_Photo,  of   a CAT!  &amp;amp; "
    assert clip(clean="whitespace", lower_case=False).prepare(text) == "A_Photo, of a CAT! &"
    assert clip(clean="whitespace", lower_case=True).prepare(text) == "a_photo, of a cat! &"
    assert clip(clean="canonicalize").prepare(text) == "a photo of a cat"
    assert clip(clean="none", lower_case=False).prepare(text) == text


def test_empty_batch(tok: TextTokenizer) -> None:
    ids, lengths, truncated = tok.batch([])
    assert ids.shape == (0, 0) and ids.dtype == np.int64 and lengths == [] and truncated == []


def test_hostile_unicode_does_not_crash(tok: TextTokenizer) -> None:
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


def test_every_byte_is_encodable(tok: TextTokenizer) -> None:
    # The byte-level alphabet means no character is ever unknown: each non-space one yields some ids.
    for ch in ["é", "日", "🐱", "\u0378", "\x85"]:
        assert tok.encode(f"x{ch}y") or ch.isspace()


def test_short_query_is_fast(tok: TextTokenizer) -> None:
    query = "a photo of a dog on the beach"
    tok.encode(query)
    start = time.perf_counter()
    for _ in range(200):
        tok.encode(query)
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 1e-3, f"{per_call * 1e6:.0f} µs per short query"


def test_a_sentencepiece_unigram_tokenizer_pads_to_a_fixed_length() -> None:
    """SigLIP's kind of tokenizer: Unigram pieces, an end token appended, fixed-length padding, canonical text."""
    from tokenizers import models, pre_tokenizers, processors

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁a", -1.0), ("▁photo", -2.0), ("▁of", -2.0),
              ("▁cat", -2.0), ("▁", -3.0), *((c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz")]
    unigram = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = TextTokenizer(unigram, TextSpec(context_length=6, padding="max_length", clean="canonicalize",
                                          lower_case=False, pad_id=0))
    ids, truncated = tok.tokenize("A photo, of a CAT!")
    assert ids == [3, 4, 5, 3, 6, 1] and not truncated
    ids, truncated = tok.tokenize("a photo of a cat a cat")
    assert truncated and len(ids) == 6 and ids[-1] == 1, "the end token stays last when cut"
    padded, mask = tok.pad([[3, 1]])
    assert padded.tolist() == [[3, 1, 0, 0, 0, 0]] and mask.tolist() == [[1, 1, 0, 0, 0, 0]]
