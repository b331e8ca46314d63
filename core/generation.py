"""What the generation datamodule and the generator module share: the model families and the pad-token rule.

Kept in core so that ``datamodules/summarization.py`` and ``models/generator.py`` agree without importing
each other (the layers of docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

# model.architecture / datamodule.architecture (besides auto): decoder-only or encoder-decoder
ARCHITECTURES = ("causal", "seq2seq")


def ensure_pad_token(tokenizer: Any) -> None:
    """GPT-style tokenizers have no pad token: pad with eos (padding is masked out of attention and loss)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token: a generator needs one to pad batches.")
        tokenizer.pad_token = tokenizer.eos_token
