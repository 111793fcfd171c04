"""Small SentencePiece-style vocabularies trained with `tokenizers`, for families whose real one is not here.

Each kind reproduces the real tokenizer's pipeline (normalisation, special-token ids, what is added around
the text); only the learned pieces differ. The result is a tokenizer.json that `tokenizers` runs as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Captions in a few scripts, written for this file: enough text for a few hundred pieces.
CORPUS = (
    "a photo of a cat sitting on a wooden table",
    "a dog running on the beach at sunset",
    "two children playing football in a park",
    "a red car parked in front of an old house",
    "a bowl of fresh fruit on the kitchen counter",
    "mountains covered with snow under a blue sky",
    "a man riding a bicycle through the city streets",
    "a plate of pasta with tomato sauce and basil",
    "ein Foto einer Katze, die auf einem Holztisch sitzt",
    "ein Hund läuft bei Sonnenuntergang am Strand",
    "zwei Kinder spielen Fußball im Park",
    "une photo d'un chat assis sur une table en bois",
    "un chien qui court sur la plage au coucher du soleil",
    "deux enfants jouent au football dans un parc",
    "una foto de un gato sentado en una mesa de madera",
    "un perro corriendo en la playa al atardecer",
    "dos niños jugando al fútbol en un parque",
    "una foto di un gatto seduto su un tavolo di legno",
    "um cachorro correndo na praia ao pôr do sol",
    "фотография кошки, сидящей на деревянном столе",
    "собака бежит по пляжу на закате",
    "坐在木桌上的猫的照片",
    "日没時にビーチを走る犬",
    "صورة قطة تجلس على طاولة خشبية",
    "कुत्ता सूर्यास्त के समय समुद्र तट पर दौड़ रहा है",
    "a black and white photograph of a train station in 1950",
    "an aerial view of a river winding through green fields",
    "close-up of a bee on a yellow flower",
)

# Special tokens in id order and what is added around the text. Clean-up (lower case, punctuation) is the
# bundle's text rule, applied before the tokenizer, so the tokenizer.json is the plain real one.
KINDS: dict[str, dict[str, Any]] = {
    # T5's SentencePiece layout, as SiglipTokenizer uses it: pad and eos are both "</s>" at the model.
    "siglip": {"specials": ["<pad>", "</s>", "<unk>"], "template": "$A </s>", "pad": "</s>"},
    # Gemma's byte-fallback BPE: <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4, then the 256 byte tokens;
    # SigLIP 2 appends eos (no bos) and pads with <pad>.
    "siglip2": {"specials": ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *(f"<0x{b:02X}>" for b in range(256))],
                "template": "$A <eos>", "pad": "<pad>", "bpe": True},
    # XLM-RoBERTa's fairseq layout: <s> 0, <pad> 1, </s> 2, <unk> 3, and <mask> last.
    "xlmr": {"specials": ["<s>", "<pad>", "</s>", "<unk>"], "template": "<s> $A </s>", "pad": "<pad>",
             "mask": "<mask>"},
}
VOCAB_SIZE = 400


def _gemma_bpe(specials: list[str]) -> Any:
    """A byte-fallback BPE trained on CORPUS with the pipeline transformers' GemmaTokenizer builds."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "\u2581")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    # The byte tokens take 256 ids: a larger vocabulary leaves room for merges.
    tokenizer.train_from_iterator(CORPUS, trainer=BpeTrainer(vocab_size=len(specials) + 600, special_tokens=specials))
    return tokenizer


def train(kind: str, vocab_size: int = VOCAB_SIZE) -> Any:
    """A `tokenizers.Tokenizer` of the given kind: Unigram (SentencePiece) or Gemma's BPE, trained on CORPUS."""
    from tokenizers import processors

    spec = KINDS[kind]
    if spec.get("bpe"):
        tokenizer = _gemma_bpe(spec["specials"])
    else:
        tokenizer = _unigram(spec, vocab_size)
    if "mask" in spec:
        tokenizer.add_special_tokens([spec["mask"]])
    specials = [(t, tokenizer.token_to_id(t)) for t in spec["specials"] if t in spec["template"]]
    tokenizer.post_processor = processors.TemplateProcessing(single=spec["template"], special_tokens=specials)
    return tokenizer


def _unigram(spec: dict[str, Any], vocab_size: int) -> Any:
    """A SentencePiece-style Unigram trained on CORPUS (NFKC, whitespace collapsed, "▁" word marks)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers import decoders as decoders_
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    unk = next(s for s in spec["specials"] if "unk" in s)
    tokenizer = Tokenizer(Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "),
                                                  normalizers.Strip()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders_.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = UnigramTrainer(vocab_size=vocab_size, special_tokens=spec["specials"], unk_token=unk,
                             shrinking_factor=0.75)
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return tokenizer


def write(kind: str, path: str | Path) -> Path:
    """Train a vocabulary of the given kind and save it as tokenizer.json."""
    out = Path(path)
    train(kind).save(str(out))
    return out


def pad_id(kind: str, tokenizer: Any) -> int:
    """The id the model pads with."""
    found: int = tokenizer.token_to_id(KINDS[kind]["pad"])
    return found
