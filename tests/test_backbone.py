"""The offline tiny backbone: a tokenizer trained on the fly must be reproducible and cover Korean."""

from __future__ import annotations

from models.backbone import iter_texts, train_tokenizer, unknown_token_rate
from tests.conftest import SAMPLE


def _texts() -> list[str]:
    return list(iter_texts([SAMPLE / "train.json"], ["context", "question", "title"]))


def test_tokenizer_ids_do_not_depend_on_hash_order() -> None:
    """The trainer numbers equal-frequency tokens in hash-map order; ids are re-assigned canonically
    (special tokens first, then sorted), so a vocabulary always gets the same ids."""
    tokenizer = train_tokenizer(_texts(), vocab_size=2000)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [token for token, _ in vocab]
    assert [i for _, i in vocab] == list(range(len(vocab)))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert sorted(tokens[: len(specials)]) == sorted(specials)
    assert tokens[len(specials) :] == sorted(tokens[len(specials) :])


def test_tokenizer_covers_korean_and_keeps_offsets() -> None:
    texts = _texts()
    tokenizer = train_tokenizer(texts, vocab_size=2000)
    assert unknown_token_rate(tokenizer, texts[:300]) < 0.01
    encoded = tokenizer("훈란강은 어디에서 시작되는가?", return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    text = "훈란강은 어디에서 시작되는가?"
    pieces = [text[a:b] for a, b in encoded["offset_mapping"][1:-1]]
    assert "".join(pieces) == text.replace(" ", "")


def test_tokenizer_text_comes_from_csv_files_too(tmp_path) -> None:
    """Competition data is often CSV (KLUE-RE's train.csv): the offline backbone must read it."""
    path = tmp_path / "train.csv"
    path.write_text("id,sentence,label\n1,\"훈란강은 류요산에서 발원한다.\",a\n2,세루중공업의 창업자는 남율람이다.,b\n",
                    encoding="utf-8")
    assert list(iter_texts([path], ["sentence"])) == ["훈란강은 류요산에서 발원한다.", "세루중공업의 창업자는 남율람이다."]
