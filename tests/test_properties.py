"""Property-based tests (hypothesis) of the invariants the rest of the framework relies on.

* Span decoding: whatever the logits, every decoded answer is a slice of its own context, and the
  windows' context offsets are in bounds and monotone.
* Windowing: with ``doc_stride >= max_answer_length - 1`` every gold answer of at most ``max_answer_length``
  tokens lies whole in some window, is labelled there, and decodes back to exactly its text.
* KorQuAD EM/F1: bounds, symmetry, identity, whitespace invariance, order invariance, monotone in the gold.
* BM25: rankings do not depend on the order of the passages and never repeat a passage.

Examples are few (``max_examples``) and unbounded in time (``deadline=None``): the suite runs on 2 busy cores.
"""

from __future__ import annotations

import random
import unicodedata
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from datamodules.mrc_features import build_eval_features, build_train_features, collate_qa
from models.backbone import train_tokenizer
from models.qa_metrics import evaluate, exact_match_score, f1_score, normalize_answer
from models.qa_postprocess import decode_predictions, topk_candidates
from retrievals.bm25 import BM25Retriever
from retrievals.corpus import Passage
from tests.test_mrc_features import CONTEXTS

QUICK = settings(max_examples=30, deadline=None)
WORDS = sorted({word for text in CONTEXTS.values() for word in text.split()})
# Unseen syllables (tokenised to [UNK]), digits, punctuation, and decomposed (NFD) jamo, whose offsets the
# tokenizer's NFC normaliser must map back into the raw text.
ODD = list("갉궯뷁쀍") + ["2,600", "(KTX)", "…", unicodedata.normalize("NFD", "한강"), "A.I."]
word = st.sampled_from(WORDS) | st.sampled_from(ODD)
QUESTION = "이것은 무엇인가?"
# (max_seq_length, doc_stride): small windows, so contexts span several of them
WINDOWS = [(40, 8), (48, 16), (64, 24), (96, 40)]


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer(list(CONTEXTS.values()), vocab_size=2000, min_frequency=1)


def example(context: str, answers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": "q", "title": "", "context": context, "question": QUESTION, "answers": answers or [],
            "document_id": None}  # fmt: skip


def rows(table: dict[str, list]) -> list[dict[str, Any]]:
    return [dict(zip(table, values, strict=True)) for values in zip(*table.values(), strict=True)]


# ----------------------------------------------------------------------------- span decoding


@QUICK
@given(
    words=st.lists(word, min_size=1, max_size=150),
    window=st.sampled_from(WINDOWS),
    seed=st.integers(0, 2**31 - 1),
    n_best=st.integers(1, 20),
    max_answer_length=st.integers(1, 30),
)
def test_decoded_answers_are_slices_of_their_context(
    tok, words, window, seed, n_best, max_answer_length
) -> None:
    context = " ".join(words)
    max_seq_length, doc_stride = window
    features = build_eval_features(
        [example(context)], tok, max_seq_length=max_seq_length, doc_stride=doc_stride
    )
    window_starts = []
    for offsets, mask in zip(features["offset_mapping"], features["context_mask"], strict=True):
        spans = [o for o, m in zip(offsets, mask, strict=True) if m]
        assert spans, "every window holds some context"
        assert all(o == [-1, -1] for o, m in zip(offsets, mask, strict=True) if not m)
        assert all(0 <= s < e <= len(context) for s, e in spans)
        assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(spans, spans[1:], strict=False))  # monotone
        window_starts.append(spans[0][0])
    assert window_starts == sorted(window_starts) and len(set(window_starts)) == len(window_starts)

    batch = collate_qa(rows(features), tok.pad_token_id)
    generator = torch.Generator().manual_seed(seed)
    start, end = (torch.randn(batch["input_ids"].shape, generator=generator) * 3 for _ in range(2))
    candidates = topk_candidates(start, end, batch["context_mask"], n_best)
    predictions, nbest = decode_predictions(
        [example(context)], features["example_index"], features["offset_mapping"], None, *candidates,
        n_best_size=n_best, max_answer_length=max_answer_length,
    )  # fmt: skip
    assert predictions["q"] in context
    entries = nbest["q"]
    assert predictions["q"] == (entries[0]["text"] if entries else "")
    for entry in entries:
        s, e = entry["offsets"]
        assert 0 <= s < e <= len(context) and context[s:e] == entry["text"]
    assert [c["score"] for c in entries] == sorted((c["score"] for c in entries), reverse=True)
    assert not entries or abs(sum(c["probability"] for c in entries) - 1) < 1e-6


# ----------------------------------------------------------------------------- windows keep every answer


@QUICK
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=3, max_size=200),
    window=st.sampled_from(WINDOWS),
    data=st.data(),
)
def test_every_answer_that_fits_max_answer_length_is_recoverable(tok, words, window, data) -> None:
    """Answers are whole words (so token borders exist at both ends); any position, any window size."""
    max_seq_length, doc_stride = window
    first = data.draw(st.integers(0, len(words) - 1), label="first word")
    last = data.draw(st.integers(first, min(first + 2, len(words) - 1)), label="last word")
    context = " ".join(words)
    start = len(" ".join(words[:first])) + (1 if first else 0)
    text = " ".join(words[first : last + 1])
    encoded = tok(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    answer_tokens = sum(1 for s, e in encoded if s < start + len(text) and e > start)
    # the longest answer decoding may return: the answer must fit it, and doc_stride must cover it
    max_answer_length = data.draw(st.integers(answer_tokens, doc_stride + 1), label="max_answer_length")
    ex = example(context, [{"text": text, "answer_start": start}])
    settings_ = {"max_seq_length": max_seq_length, "doc_stride": doc_stride}
    train = build_train_features([ex], tok, **settings_)
    evals = build_eval_features([ex], tok, **settings_)
    labelled = [f for f, s in enumerate(train["start_positions"]) if s > 0]
    assert labelled, f"no window holds the {answer_tokens}-token answer whole"
    feature = labelled[0]
    s, e = train["start_positions"][feature], train["end_positions"][feature]
    offsets = evals["offset_mapping"][feature]
    assert (offsets[s][0], offsets[e][1]) == (start, start + len(text))
    assert e - s + 1 == answer_tokens <= max_answer_length

    batch = collate_qa(rows(evals), tok.pad_token_id)
    start_logits = torch.zeros(batch["input_ids"].shape)
    end_logits = torch.zeros(batch["input_ids"].shape)
    start_logits[feature, s], end_logits[feature, e] = 10.0, 10.0
    candidates = topk_candidates(start_logits, end_logits, batch["context_mask"], 5)
    predictions, _ = decode_predictions(
        [ex], evals["example_index"], evals["offset_mapping"], None, *candidates, n_best_size=5,
        max_answer_length=max_answer_length,
    )  # fmt: skip
    assert predictions["q"] == text


# ----------------------------------------------------------------------------- EM / F1

answer_text = st.text(alphabet=st.sampled_from(list("서울한강세종 1394년abcXYZ.,!()'\"《》  ")), max_size=16)


def has_chars(text: str) -> bool:
    return bool(normalize_answer(text).replace(" ", ""))


@QUICK
@given(prediction=answer_text, gold=answer_text, spaces=st.lists(st.integers(0, 16), max_size=4))
def test_em_and_f1_bounds_and_invariances(prediction, gold, spaces) -> None:
    em, f1 = exact_match_score(prediction, gold), f1_score(prediction, gold)
    assert 0.0 <= f1 <= 1.0 and em in (True, False)
    if em and has_chars(gold):
        assert f1 == 1.0  # (both normalising to "" is the official script's EM 1 / F1 0 quirk)
    assert f1 == pytest.approx(f1_score(gold, prediction))  # symmetric
    assert exact_match_score(gold, gold) and (f1_score(gold, gold) == 1.0) == has_chars(gold)
    spaced = prediction
    for position in spaces:  # F1 ignores whitespace; EM ignores it at the ends and collapses runs
        spaced = spaced[:position] + " " + spaced[position:]
    assert f1_score(spaced, gold) == f1
    assert exact_match_score(f"  {prediction} ", gold) == em


@QUICK
@given(
    questions=st.lists(
        st.tuples(answer_text, st.lists(answer_text, min_size=1, max_size=3)), min_size=1, max_size=8
    ),
    extra=answer_text,
    seed=st.integers(0, 1000),
)
def test_evaluate_is_bounded_order_free_and_monotone_in_gold(questions, extra, seed) -> None:
    def dataset(items: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
        qas = [{"id": f"q{i}", "answers": [{"text": g} for g in golds]} for i, (_, golds) in enumerate(items)]
        return [{"paragraphs": [{"qas": qas}]}]

    predictions = {f"q{i}": prediction for i, (prediction, _) in enumerate(questions)}
    scores = evaluate(dataset(questions), predictions)
    assert all(0.0 <= scores[k] <= 100.0 for k in ("exact_match", "f1"))
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    shuffled = evaluate(
        dataset([questions[i] for i in order]), {f"q{j}": questions[i][0] for j, i in enumerate(order)}
    )
    assert shuffled == pytest.approx(scores)
    more_gold = evaluate(dataset([(p, [*golds, extra]) for p, golds in questions]), predictions)
    assert more_gold["exact_match"] >= scores["exact_match"] and more_gold["f1"] >= scores["f1"] - 1e-9
    perfect = evaluate(dataset(questions), {f"q{i}": golds[0] for i, (_, golds) in enumerate(questions)})
    assert perfect["exact_match"] == 100.0


# ----------------------------------------------------------------------------- BM25


@QUICK
@given(
    texts=st.lists(st.lists(st.sampled_from(WORDS[:80]), min_size=1, max_size=12), min_size=2, max_size=25),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_bm25_ranking_ignores_passage_order_and_never_repeats(texts, seed, data) -> None:
    indexed = sorted({word for words in texts for word in words})
    query = " ".join(data.draw(st.lists(st.sampled_from(indexed), min_size=1, max_size=5), label="query"))
    passages = [Passage(f"p{i}", " ".join(words)) for i, words in enumerate(texts)]
    shuffled = passages[:]
    random.Random(seed).shuffle(shuffled)
    k = len(passages)
    results = []
    for corpus in (passages, shuffled):
        retriever = BM25Retriever(tokenizer="whitespace", engine="numpy").index(corpus)
        ids, scores = (column[0] for column in retriever.search([query], k))
        assert len(ids) == len(set(ids)) == k  # every passage once (its words are indexed, so k results)
        assert scores == sorted(scores, reverse=True)
        results.append(dict(zip(ids, scores, strict=True)))
    assert results[1] == pytest.approx(results[0], abs=1e-9)
