"""Text to token ids for any bundle: the bundle's clean-up in Python, then Hugging Face tokenizers.

A format-2 bundle carries a tokenizer.json. A format-1 (CLIP) bundle carries OpenAI's BPE vocabulary,
from which clip_tokenizer() builds the same byte-level BPE in memory: CLIP's word-splitting regular
expression, each word's UTF-8 bytes spelt in a 256-character printable alphabet, merges by rank, "</w>"
on each word's last symbol. Both give the reference ids on all 309 cases of the shared reference.
"""

from __future__ import annotations

import gzip
import html
import shutil
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import ftfy
import numpy as np
import regex
from numpy.typing import NDArray
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from embedder_service.models.bundle import TOKENIZER_FILE, Bundle, BundleError, TextSpec

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
PAD_ID = 0
# The vocabulary file is longer than the model's vocabulary: CLIP uses only the first merges.
_MERGE_COUNT = 49152 - 256 - 2
_WORD_SUFFIX = "</w>"
# Special tokens come first so that literal "<|endoftext|>" in a query maps to its id, as in the reference.
_CLIP_SPLIT = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
_SPACES = regex.compile(r"\s+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


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


def _basic(text: str) -> str:
    """ftfy, then HTML entities twice (scraped captions are often double-escaped: "&amp;amp;")."""
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace(text: str) -> str:
    spaced: str = _SPACES.sub(" ", text)  # typed here: the regex package ships no stubs
    return spaced.strip()


def clean(text: str) -> str:
    """CLIP's clean-up: ftfy, entities, whitespace, lower case (the "whitespace" rule with lower_case)."""
    return _whitespace(_basic(text)).lower()


def _canonicalize(text: str) -> str:
    """open_clip's canonical text (SigLIP): punctuation removed, "_" as space, lower case, whitespace."""
    return " ".join(_basic(text).replace("_", " ").translate(_PUNCTUATION).lower().split())


CLEANERS: dict[str, Callable[[str], str]] = {
    "whitespace": lambda text: _whitespace(_basic(text)),
    "canonicalize": _canonicalize,
    "none": lambda text: text,
}


def clip_tokenizer(vocab_path: str | Path) -> Tokenizer:
    """CLIP's byte-level BPE (ids as in OpenAI's tokenizer) built from its bpe_simple_vocab_16e6.txt.gz."""
    with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Line 0 is a version header; each following line is one merge "left right", best first.
    merges = [tuple(line.split()) for line in lines[1 : 1 + _MERGE_COUNT]]
    if len(merges) != _MERGE_COUNT or any(len(m) != 2 for m in merges):
        raise BundleError(f"{vocab_path} is not a CLIP BPE vocabulary")
    pairs = [(left, right) for left, right in merges]
    # The reference's id order: single symbols by code point, the same with "</w>", merges, specials.
    symbols = sorted(_byte_alphabet().values())
    tokens = [*symbols, *(s + _WORD_SUFFIX for s in symbols), *("".join(m) for m in pairs), SOT, EOT]
    vocab = {token: i for i, token in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, pairs, end_of_word_suffix=_WORD_SUFFIX, continuing_subword_prefix=""))
    # Words are what CLIP's expression matches (everything else, whitespace, is dropped); then bytes.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), "removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([SOT, EOT])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])])
    return tok


def write_clip_tokenizer(vocab_path: str | Path, dst: str | Path) -> None:
    """Write CLIP's tokenizer.json (for format-2 bundles) from the BPE vocabulary."""
    clip_tokenizer(vocab_path).save(str(dst), pretty=False)


class TextTokenizer:
    """A bundle's text rules: clean-up, lower case, tokenizer, truncation and padding; thread-safe."""

    def __init__(self, tokenizer: Tokenizer, spec: TextSpec) -> None:
        if spec.context_length < 2:
            raise ValueError(f"context_length must leave room for start and end tokens, got {spec.context_length}")
        self.spec = spec
        self.context_length = spec.context_length
        self._clean = CLEANERS[spec.clean]
        self._tok = tokenizer
        # Cut here, with the tokenizer's own rule (its end token stays last); padding is per batch, in pad().
        self._tok.no_padding()
        self._tok.enable_truncation(spec.context_length)

    @classmethod
    def of(cls, bundle: Bundle) -> TextTokenizer:
        """The tokenizer of a bundle: its tokenizer.json, or CLIP's BPE built from a format-1 vocabulary."""
        path = bundle.tokenizer
        try:
            tok = Tokenizer.from_file(str(path)) if path.suffix == ".json" else clip_tokenizer(path)
        except Exception as exc:  # tokenizers raises plain Exception for every malformed file
            raise BundleError(f"{path}: tokenizers cannot load it ({' '.join(str(exc).split())[:200]})") from None
        return cls(tok, bundle.text)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    def prepare(self, text: str) -> str:
        """The text as the tokenizer sees it: cleaned up, lower-cased where the model was trained so."""
        cleaned = self._clean(text)
        return cleaned.lower() if self.spec.lower_case else cleaned

    def encode(self, text: str) -> list[int]:
        """Ids of text without special tokens (at most context_length of them)."""
        ids: list[int] = self._tok.encode(self.prepare(text), add_special_tokens=False).ids
        return ids

    def tokenize(self, text: str) -> tuple[list[int], bool]:
        """Ids with the tokenizer's special tokens, cut to context_length (not padded), and a truncated flag."""
        found = self._tok.encode(self.prepare(text))
        return list(found.ids), bool(found.overflowing)

    def batch(self, texts: Sequence[str]) -> tuple[NDArray[np.int64], list[int], list[bool]]:
        """Padded int64 [N, L] ids, row lengths and truncated flags of several texts."""
        rows = [self.tokenize(text) for text in texts]
        ids, _ = self.pad([row for row, _ in rows])
        return ids, [len(row) for row, _ in rows], [truncated for _, truncated in rows]

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """int64 ids [N, L] padded with pad_id, and the attention mask (1 = token): L is the longest row,
        or context_length for towers trained on fixed-length input."""
        longest = max((len(row) for row in rows), default=0)
        width = self.context_length if self.spec.padding == "max_length" else longest
        ids = np.full((len(rows), width), self.spec.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask


def write_tokenizer_json(bundle: Bundle, dst_dir: Path) -> str:
    """Put the bundle's tokenizer into dst_dir as tokenizer.json (built from a format-1 vocabulary)."""
    dst = Path(dst_dir) / TOKENIZER_FILE
    if bundle.tokenizer.suffix == ".json":
        shutil.copyfile(bundle.tokenizer, dst)
    else:
        write_clip_tokenizer(bundle.tokenizer, dst)
    return TOKENIZER_FILE
