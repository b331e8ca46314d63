"""Subword tokenizer training that gives the same ``tokenizer.json`` in every process and on every machine.

HF ``tokenizers`` trains WordPiece as BPE with a ``##`` continuing-subword prefix. Its trainer numbers the
``##x`` symbols in the order it walks a hash map of the words, and breaks ties between equally frequent
pairs by those numbers; the hash map is seeded at random per process, so the same text and settings give
another vocabulary in another process (and another model for the same seed). Its alphabet cut
(``limit_alphabet``) also drops characters of equal count in hash order.

The trainer itself is kept (Rust, fast, the algorithm users know); what changes is its input. Here we:

1. count the words ourselves (the real normaliser and pre-tokeniser) and cut the alphabet by (count, character);
2. write every symbol as one private-use character numbered in sorted order: a character at the start of a
   word and the same character inside a word (``##x``) get neighbouring code points. With no prefix to add,
   the trainer numbers every symbol by that sorted alphabet, so its tie-breaks are fixed;
3. train BPE on those words and map the vocabulary (and merges) back to text, ``##`` where a token starts
   inside a word.

No library trains WordPiece deterministically (sentencepiece does, but is another algorithm and format), hence
this thin layer rather than a trainer of our own.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
CONTINUING_PREFIX = "##"
# Symbols are written as code points of the supplementary private-use planes 15 and 16 (2 x 65,536): two a
# character (word start, inside a word), so up to 65,536 distinct characters.
_SYMBOL_BASE = 0xF0000
_MAX_ALPHABET = 0x20000 // 2


def train_tokenizer(
    texts: Iterable[str],
    *,
    algorithm: str = "wordpiece",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    limit_alphabet: int = 4000,
    lowercase: bool = False,
    model_max_length: int = 512,
    pre_tokenizer: str = "bert",
    initial_alphabet: str = "",
) -> PreTrainedTokenizerFast:
    """Train a BERT-style subword tokenizer with HF ``tokenizers`` and wrap it as a fast tokenizer.

    ``limit_alphabet`` is large on purpose: Korean has thousands of syllables and WordPiece's
    default of 1,000 would turn rare syllables (and so whole words) into ``[UNK]``.
    ``pre_tokenizer: metaspace`` (BPE only) marks word starts with ``▁`` as SentencePiece (KoGPT2, KoBART) does,
    so decoding gives back the exact spacing: what a generator's output text needs. ``bert`` splits off
    punctuation, and its decoder cannot tell ``30 %`` from ``30%``. ``initial_alphabet``: characters kept in
    the vocabulary even if the training text lacks them (a prompt template's newline and colon).
    The result depends only on the texts and the settings (see the module docstring).
    """
    if pre_tokenizer not in ("bert", "metaspace"):
        raise ValueError(f"backbone.tokenizer.pre_tokenizer={pre_tokenizer!r}: use 'bert' or 'metaspace'")
    if pre_tokenizer == "metaspace" and algorithm != "bpe":
        raise ValueError("backbone.tokenizer.pre_tokenizer=metaspace needs backbone.tokenizer.algorithm=bpe")
    if algorithm not in ("wordpiece", "bpe"):
        raise ValueError(f"backbone.tokenizer.algorithm={algorithm!r}: use 'wordpiece' or 'bpe'")
    prefix = None if pre_tokenizer == "metaspace" else CONTINUING_PREFIX

    tokenizer = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else []))
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Metaspace() if pre_tokenizer == "metaspace" else pre_tokenizers.BertPreTokenizer()
    )
    words = count_words(tokenizer, texts)
    alphabet = choose_alphabet(words, limit_alphabet, initial_alphabet)
    symbols = SymbolCode(alphabet, inside_word=prefix is not None)
    vocab, merges = train_bpe_on_symbols(words, symbols, vocab_size=vocab_size, min_frequency=min_frequency)

    specials = list(SPECIAL_TOKENS.values())
    if algorithm == "wordpiece":
        # WordPiece looks tokens up by string: number them specials first, then sorted, as a stable order.
        ordered = specials + sorted(set(vocab) - set(specials))
        tokenizer.model = models.WordPiece(
            {token: i for i, token in enumerate(ordered)}, unk_token=SPECIAL_TOKENS["unk_token"]
        )
        tokenizer.decoder = decoders.WordPiece()
    else:
        extra = {"continuing_subword_prefix": prefix} if prefix else {}
        tokenizer.model = models.BPE(vocab, merges, unk_token=SPECIAL_TOKENS["unk_token"], **extra)
        tokenizer.decoder = decoders.Metaspace() if prefix is None else decoders.WordPiece()
    cls_id = tokenizer.token_to_id(SPECIAL_TOKENS["cls_token"])
    sep_id = tokenizer.token_to_id(SPECIAL_TOKENS["sep_token"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    # BertTokenizerFast(vocab_file=...) would rebuild a special-tokens-only vocab in transformers 5.x,
    # so wrap the trained object directly.
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **SPECIAL_TOKENS)


def count_words(tokenizer: Tokenizer, texts: Iterable[str]) -> Counter[str]:
    """Words as the tokenizer's own normaliser and pre-tokeniser cut them, with their counts."""
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    words: Counter[str] = Counter()
    for text in texts:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return words


def choose_alphabet(words: Counter[str], limit: int | None, initial: str = "") -> list[str]:
    """The ``limit`` most frequent characters (ties by code point) plus ``initial``, sorted by code point."""
    counts: Counter[str] = Counter()
    for word, count in words.items():
        for char in word:
            counts[char] += count
    ranked = sorted(counts, key=lambda char: (-counts[char], char))
    kept = set(ranked if limit is None else ranked[:limit]) | set(initial)
    if len(kept) > _MAX_ALPHABET:
        raise ValueError(
            f"the training text has {len(kept)} distinct characters: set backbone.tokenizer.limit_alphabet "
            f"to at most {_MAX_ALPHABET}."
        )
    return sorted(kept)


class SymbolCode:
    """Characters <-> private-use symbols: ``2i`` for character ``i`` at a word's start, ``2i + 1`` inside one."""

    def __init__(self, alphabet: list[str], inside_word: bool) -> None:
        self.alphabet = alphabet
        self.inside_word = inside_word
        self.index = {char: i for i, char in enumerate(alphabet)}

    def encode(self, word: str) -> str:
        """A word as symbols; characters outside the alphabet are left out, as HF's trainer skips them."""
        out = []
        for char in word:
            i = self.index.get(char)
            if i is not None:
                out.append(chr(_SYMBOL_BASE + 2 * i + (1 if self.inside_word and out else 0)))
        return "".join(out)

    def decode(self, symbols: str) -> str:
        """A token's text, with the continuing prefix when its first symbol is inside a word."""
        codes = [ord(s) - _SYMBOL_BASE for s in symbols]
        text = "".join(self.alphabet[code // 2] for code in codes)
        return CONTINUING_PREFIX + text if codes[0] % 2 else text

    def word_starts(self) -> list[str]:
        return [chr(_SYMBOL_BASE + 2 * i) for i in range(len(self.alphabet))]


def train_bpe_on_symbols(
    words: Counter[str], symbols: SymbolCode, *, vocab_size: int, min_frequency: int
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """HF's BPE trainer on the encoded words; returns the vocabulary and the merges as text."""
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        # every character at a word start, as HF's WordPiece trainer keeps the whole alphabet
        initial_alphabet=symbols.word_starts(),
        show_progress=False,
    )
    bpe = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    encoded = sorted((symbols.encode(word), count) for word, count in words.items())
    bpe.train_from_iterator((" ".join([word] * count) for word, count in encoded if word), trainer=trainer)
    state: dict[str, Any] = json.loads(bpe.model.__getstate__())
    decode = {token: (token if token in specials else symbols.decode(token)) for token in state["vocab"]}
    vocab = {decode[token]: i for token, i in state["vocab"].items()}
    merges = [tuple(symbols.decode(part) for part in _merge_parts(merge)) for merge in state["merges"]]
    return vocab, merges  # type: ignore[return-value]


def _merge_parts(merge: Any) -> tuple[str, str]:
    """A merge as saved by ``tokenizers`` (a pair, or ``"a b"`` in older versions)."""
    if isinstance(merge, str):
        left, right = merge.split(" ")
        return left, right
    return merge[0], merge[1]
