"""A reader trained for many passages: mined negatives (leak-free, reproducible) and shared normalisation."""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datamodules.mrc import MRCDataModule
from datamodules.mrc_formats import load_mrc_examples
from datamodules.negatives import NEGATIVE_MARK, NegativesRequest, negative_examples
from models.reader import shared_norm_loss
from retrievals.corpus import load_corpus
from tasks.build import build_backbone
from tasks.negatives import RetrievedNegatives, attach_negatives
from tasks.runner import compose_config
from tests.conftest import SAMPLE


def _retriever_cfg(tmp_path: Path, retriever: str = "bm25") -> dict:
    cfg = compose_config([f"retriever={retriever}", "retriever.tokenizer.name=char_ngram",
                          f"retriever.corpus_file={SAMPLE / 'corpus.jsonl'}", f"paths.cache_dir={tmp_path / 'cache'}"],
                         tmp_path / "run")
    return OmegaConf.to_container(cfg.retriever, resolve=True)


@pytest.fixture(scope="module")
def sample() -> tuple[list, list]:
    train = load_mrc_examples(SAMPLE / "train.json", require_answers=True)[:150]
    validation = load_mrc_examples(SAMPLE / "validation.json", require_answers=True)
    return train, validation


def _request(train: list, validation: list, seed: int = 7, cache_dir: Path | None = None) -> NegativesRequest:
    return NegativesRequest(examples=train, held_out=validation, k=3, pool=10, seed=seed,
                            cache_dir=None if cache_dir is None else str(cache_dir), train_file=None)


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def test_negatives_never_hold_the_answer_nor_a_validation_passage_and_repeat_with_the_seed(
    sample: tuple[list, list], tmp_path: Path
) -> None:
    train, validation = sample
    miner = RetrievedNegatives(_retriever_cfg(tmp_path))
    mined = miner(_request(train, validation, cache_dir=tmp_path / "a"))
    corpus = {p.id: p for p in load_corpus(SAMPLE / "corpus.jsonl")}
    held_docs = {ex["document_id"] for ex in validation}
    held_texts = {_norm(ex["context"]).strip() for ex in validation}
    assert set(mined) == {ex["id"] for ex in train}
    for ex in train:
        negatives = mined[ex["id"]]
        assert len(negatives) == 3, ex["id"]
        assert len({p["id"] for p in negatives}) == 3
        for passage in negatives:
            assert passage["id"] in corpus and passage["text"] == corpus[passage["id"]].text
            assert passage["document_id"] != ex["document_id"], (ex["id"], passage["id"])
            assert _norm(passage["text"]).strip() != _norm(ex["context"]).strip()
            assert not any(_norm(a["text"]).strip() in _norm(passage["text"]) for a in ex["answers"])
            assert passage["document_id"] not in held_docs and _norm(passage["text"]).strip() not in held_texts
    # the same seed: the same negatives (fresh cache, and from the cache); another seed: other draws
    assert miner(_request(train, validation, cache_dir=tmp_path / "b")) == mined
    assert miner(_request(train, validation, cache_dir=tmp_path / "a")) == mined
    # a question's draw does not depend on the other questions mined with it
    alone = miner(_request(train[5:6], validation))
    assert alone[train[5]["id"]] == mined[train[5]["id"]]
    other = miner(_request(train, validation, seed=8))
    assert sum(other[q] != mined[q] for q in mined) > len(mined) // 2


def test_any_retriever_mines_them_tfidf_too(sample: tuple[list, list], tmp_path: Path) -> None:
    train, validation = sample
    mined = RetrievedNegatives(_retriever_cfg(tmp_path, "tfidf"))(_request(train[:40], validation))
    held = {ex["document_id"] for ex in validation}
    for ex in train[:40]:
        assert len(mined[ex["id"]]) == 3
        for passage in mined[ex["id"]]:
            assert passage["document_id"] not in held | {ex["document_id"]}
            assert not any(a["text"].strip() in passage["text"] for a in ex["answers"])


def test_datamodule_adds_negatives_as_no_answer_windows_grouped_by_question(tmp_path: Path) -> None:
    cfg = compose_config([
        "+experiment=odqa_reader", "retriever.tokenizer.name=char_ngram", "datamodule.max_train_examples=40",
        "datamodule.max_eval_examples=8", "datamodule.negative_passages=2", "backbone.tokenizer.vocab_size=2000",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ], tmp_path / "run")
    backbone = build_backbone(cfg)
    datamodule = attach_negatives(instantiate(cfg.datamodule, tokenizer=backbone.tokenizer, _convert_="all"),
                                  cfg.retriever)
    assert isinstance(datamodule, MRCDataModule)
    miner, seen = datamodule.negative_miner, []
    datamodule.use_negative_miner(lambda request: seen.append(request) or miner(request))
    datamodule.setup("fit")
    # every validation question's passage is held out, not only the max_eval_examples=8 this run evaluates
    assert len(seen[0].held_out) == len(load_mrc_examples(SAMPLE / "validation.json")) > 8
    groups = datamodule.train_groups
    assert groups is not None and len(groups) == 40
    cls = backbone.tokenizer.cls_token_id
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["question_group"].max().item() == cfg.datamodule.batch_size - 1
    for rows in groups.rows:
        features = [datamodule.train_features[r] for r in rows]
        answered = [f for f in features if f["start_positions"] != f["input_ids"].index(cls)]
        # the question's own passage has the answer in a window; its two negatives add windows that point at CLS
        assert answered and len(features) >= 3


def test_shared_normalisation_equals_a_hand_computation_on_two_passages() -> None:
    """Question 0 has two windows (two passages; the answer in the first, tokens 2..3); question 1 one window whose
    answer was cut (target CLS): it adds nothing. By hand: minus the log of the gold logit's share of all context
    logits of both windows, for start and end, averaged."""
    start = torch.tensor([[9.0, 0.1, 1.5, 0.2, -0.3, 0.0], [9.0, 0.0, 2.0, 1.0, 0.5, 0.7], [3.0, 1.0, 1.0, 1.0, 0, 0]],
                         requires_grad=True)
    end = torch.tensor([[9.0, 0.4, 0.3, 2.5, 0.1, 0.0], [9.0, 0.0, 0.2, 1.2, 1.9, 0.3], [3.0, 1.0, 1.0, 1.0, 0, 0]],
                       requires_grad=True)
    context = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]])
    loss = shared_norm_loss(start, end, torch.tensor([2, 0, 0]), torch.tensor([3, 0, 0]), context,
                            torch.tensor([0, 0, 1]))

    def by_hand(logits: list[list[float]], gold: float) -> float:
        pool = logits[0][2:5] + logits[1][2:6]  # the context tokens of both windows; CLS (9.0) is not a span
        return math.log(sum(math.exp(v) for v in pool)) - gold

    expected = (by_hand(start.tolist(), 1.5) + by_hand(end.tolist(), 2.5)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(start.grad).all() and start.grad[2].abs().sum() == 0  # the unanswerable question: no grad
    # one window per question: shared normalisation is the per-window softmax loss over context tokens
    alone = shared_norm_loss(start[:1], end[:1], torch.tensor([2]), torch.tensor([3]), context[:1], torch.tensor([0]))
    per_window = (torch.logsumexp(start[0, 2:5], 0) - start[0, 2] + torch.logsumexp(end[0, 2:5], 0) - end[0, 3]) / 2
    assert alone.item() == pytest.approx(per_window.item(), rel=1e-6)


def test_negative_ids_name_their_question() -> None:
    examples = [{"id": "q1", "question": "누가?", "context": "가", "answers": [{"text": "가", "answer_start": 0}],
                 "title": "", "document_id": None}]
    negatives, owners = negative_examples(examples, {"q1": [{"id": "p9", "text": "나 다", "title": "t"}]})
    assert [n["id"] for n in negatives] == [f"q1{NEGATIVE_MARK}0"] and owners == [0]
    assert negatives[0]["answers"] == [] and negatives[0]["context"] == "나 다"
