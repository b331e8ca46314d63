"""Training retrievers: the DPR loss by hand, its in-batch negatives gathered under DDP on CPU, and
``+experiment=dense_retriever`` / ``+experiment=reranker`` end to end (their exports load in ``task=retrieve``)."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from models.contrastive import PAD_KEY, dpr_loss, gather_passages
from tests.conftest import SAMPLE, TINY_BACKBONE, read_json, run_main

SMALL = [
    "print_config=false", "logger=csv", "trainer.max_epochs=1", "trainer.max_steps=12",
    "trainer.log_every_n_steps=1", "datamodule.max_train_examples=96", "datamodule.max_eval_examples=90",
    "datamodule.batch_size=8", "retriever.corpus_file=null", "retriever.tokenizer.name=char_ngram", *TINY_BACKBONE,
]


# ----------------------------------------------------------------------------- the loss


def test_dpr_loss_equals_a_hand_computation() -> None:
    """2 questions, 4 passages (positives 0 and 1, then one hard negative each). Passage 3 has the text of
    question 0's positive (another question brought it): it is no negative of question 0, but of question 1."""
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[2.0, 1.0], [1.0, 1.0], [0.0, 1.0], [3.0, 0.0]])
    keys = torch.tensor([10, 11, 12, 10])
    positive = torch.tensor([0, 1])
    loss = dpr_loss(q, p, positive, keys, temperature=0.5)
    # question 0: scores (2, 1, 0, [3 masked]) / 0.5 -> (4, 2, 0); question 1: (2, 2, 2, 0) / 0.5 -> (4, 4, 4, 0)
    l0 = -4 + math.log(math.exp(4) + math.exp(2) + math.exp(0))
    l1 = -4 + math.log(3 * math.exp(4) + math.exp(0))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    padded = dpr_loss(q, torch.cat([p, torch.zeros(1, 2)]), positive, torch.cat([keys, torch.tensor([PAD_KEY])]),
                      temperature=0.5)
    assert padded.item() == pytest.approx(loss.item(), rel=1e-6)  # a padding column is never scored


def test_retriever_data_settings_are_checked_with_the_key_to_fix() -> None:
    from datamodules.passage_retrieval import PassageRetrievalDataModule, own_passages, passage_key

    with pytest.raises(ValueError, match="datamodule.pairing='dual'"):
        PassageRetrievalDataModule(tokenizer=None, pairing="dual")
    with pytest.raises(ValueError, match="model.hard_negatives=-1"):
        PassageRetrievalDataModule(tokenizer=None, hard_negatives=-1)
    with pytest.raises(ValueError, match="model=cross_encoder learns from negatives"):
        PassageRetrievalDataModule(tokenizer=None, pairing="cross", hard_negatives=0)
    # without the task layer: the questions' own contexts, de-duplicated, each question's gold its own
    examples = [{"id": "a", "title": "T", "context": "x", "question": "q1", "answers": [], "document_id": None},
                {"id": "b", "title": "T", "context": "y", "question": "q2", "answers": [], "document_id": None},
                {"id": "c", "title": "T", "context": "x", "question": "q3", "answers": [], "document_id": None}]
    evaluation = own_passages(examples)
    assert [p["text"] for p in evaluation.passages] == ["x", "y"] and evaluation.gold == [[0], [1], [0]]
    assert passage_key("T\nx") == passage_key("T\nx") != passage_key("T\ny") and passage_key("T\nx") >= 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_data(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    count = 3 if rank == 0 else 2  # unequal widths: rank 1 is padded
    questions = torch.randn(count, 4, generator=g)
    passages = torch.randn(2 * count, 4, generator=g)
    keys = torch.arange(2 * count) + 100 * rank
    return questions, passages, keys


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        questions, passages, keys = _rank_data(rank)
        passages.requires_grad_(True)
        gathered, all_keys, offset = gather_passages(passages, keys)
        positive = offset + torch.arange(questions.size(0))
        loss = dpr_loss(questions, gathered, positive, all_keys)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": passages.grad, "columns": gathered.size(0), "offset": offset},
                   f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_in_batch_negatives_are_gathered_across_ddp_processes(tmp_path: Path) -> None:
    """Two gloo processes on CPU: each question meets both processes' passages, and the gradients reaching each
    process's passages equal those of one process holding the whole batch (sum of the two losses)."""
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [g["columns"] for g in got] == [12, 12] and [g["offset"] for g in got] == [0, 6]
    # the reference: one process, all passages, with rank 1's block padded as under DDP
    data = [_rank_data(r) for r in range(2)]
    blocks = [data[0][1], torch.cat([data[1][1], torch.zeros(2, 4)])]
    for block in blocks:
        block.requires_grad_(True)
    passages = torch.cat(blocks)
    keys = torch.cat([data[0][2], torch.cat([data[1][2], torch.full((2,), PAD_KEY)])])
    losses = [dpr_loss(data[r][0], passages, r * 6 + torch.arange(data[r][0].size(0)), keys) for r in range(2)]
    sum(losses).backward()
    for r in range(2):
        assert got[r]["loss"].item() == pytest.approx(losses[r].item(), rel=1e-5)
        width = data[r][1].size(0)
        assert torch.allclose(got[r]["grad"], blocks[r].grad[:width], atol=1e-6)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (tokenizer, tokenised corpus) for the runs of this module."""
    return tmp_path_factory.mktemp("dense_cache")


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    base = tmp_path_factory.mktemp("dense")
    run_main("+experiment=dense_retriever", *SMALL, run_dir=base / "run", cache_dir=cache)
    return base / "run"


def test_dense_retriever_experiment_validates_by_retrieval_and_exports(dense_run: Path) -> None:
    metrics = read_json(dense_run / "metrics.json")
    for key in ("recall@1", "recall@5", "recall@20", "mrr@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@20"]
    assert metrics["examples"] == 90 and metrics["global_step"] == 12
    encoder = dense_run / "retriever"
    assert read_json(encoder / "dense_encoder.json")["format"] == "kornlp-dense-encoder"
    assert metrics["retriever_dir"] == str(encoder)
    predictions = read_json(dense_run / "predictions.json")
    assert len(predictions) == 90 and all(len(ids) == 20 for ids in predictions.values())


def _first_questions(source: Path, target: Path, count: int) -> None:
    """A KorQuAD-format file with the first ``count`` questions of ``source``, in order."""
    data = read_json(source)
    left = count
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = paragraph["qas"][:left]
            left -= len(paragraph["qas"])
        article["paragraphs"] = [p for p in article["paragraphs"] if p["qas"]]
    data["data"] = [a for a in data["data"] if a["paragraphs"]]
    target.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def test_task_retrieve_with_the_trained_encoder_matches_its_validation(dense_run: Path, tmp_path: Path) -> None:
    """The exported encoder, searched by retriever=dense (FAISS) over the same corpus for the same questions,
    gives the recall the training run measured (same vectors, same inner products; ties aside)."""
    pytest.importorskip("faiss")
    trained = read_json(dense_run / "metrics.json")
    questions = tmp_path / "questions.json"
    _first_questions(SAMPLE / "validation.json", questions, 90)
    run_main("task=retrieve", "retriever=dense", f"retriever.model_path={dense_run / 'retriever'}",
             f"retriever.corpus_file={SAMPLE / 'validation.json'}", f"datamodule.validation_file={questions}",
             "print_config=false", "logger=none", run_dir=tmp_path / "retrieve")
    found = read_json(tmp_path / "retrieve" / "retrieval_metrics.json")
    assert found["retriever"] == "dense" and found["questions"] == 90
    # a 12-step encoder leaves many near-ties, which padding in other batches can flip: a few questions of 90
    for key in ("recall@1", "recall@5", "recall@20"):
        assert found[key] == pytest.approx(trained[key], abs=3.5 / 90), key
    # and the same passages: each question's top 20 here against the training run's predictions.json
    retrieved = read_json(tmp_path / "retrieve" / "retrieved.json")
    predicted = read_json(dense_run / "predictions.json")
    overlap = [len({h["passage_id"] for h in retrieved[q]} & set(predicted[q])) / 20 for q in retrieved]
    assert sum(overlap) / len(overlap) >= 0.9


@pytest.fixture(scope="module")
def reranker_run(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    base = tmp_path_factory.mktemp("reranker")
    run_main("+experiment=reranker", *SMALL, "datamodule.eval_candidates=5", run_dir=base / "run", cache_dir=cache)
    return base / "run"


def test_reranker_experiment_reranks_first_stage_candidates(reranker_run: Path) -> None:
    metrics = read_json(reranker_run / "metrics.json")
    for key in ("recall@1", "recall@5", "mrr@10", "first_stage_recall@1", "first_stage_recall@5"):
        assert 0.0 <= metrics[key] <= 1.0
    # re-ranking permutes the same 5 candidates: recall@5 cannot change
    assert metrics["recall@5"] == pytest.approx(metrics["first_stage_recall@5"])
    assert metrics["examples"] == 90
    reranker = reranker_run / "reranker"
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(reranker).config.num_labels == 1
    assert read_json(reranker / "reranker.json")["max_length"] == 256
    predictions = read_json(reranker_run / "predictions.json")
    assert len(predictions) == 90 and all(len(ids) == 5 for ids in predictions.values())


def test_odqa_reads_with_a_hybrid_reranked_retriever(fitted_run: Path, dense_run: Path, reranker_run: Path,
                                                     tmp_path: Path) -> None:
    """task=odqa takes dense, hybrid and reranked retrievers unchanged (the trained ones above)."""
    pytest.importorskip("faiss")
    questions = tmp_path / "questions.json"
    _first_questions(SAMPLE / "validation.json", questions, 8)
    run_main(
        "task=odqa", f"ckpt_path={fitted_run / 'checkpoints' / 'last.ckpt'}", "print_config=false", "logger=none",
        "backbone=local", f"backbone.name_or_path={fitted_run / 'backbone'}", f"datamodule.validation_file={questions}",
        f"retriever.corpus_file={SAMPLE / 'validation.json'}", "retriever=hybrid",
        f"retriever.dense.model_path={dense_run / 'retriever'}", "retriever.sparse.tokenizer.name=char_ngram",
        f"retriever.rerank.model_path={reranker_run / 'reranker'}", "retriever.rerank.top_n=5", "retriever.top_k=3",
        run_dir=tmp_path / "odqa",
    )
    metrics = read_json(tmp_path / "odqa" / "metrics.json")
    assert metrics["retriever"] == "hybrid+rerank" and metrics["questions"] == 8
    assert 0.0 <= metrics["exact_match"] <= 100.0
    assert all(len(hits) == 3 for hits in read_json(tmp_path / "odqa" / "retrieved.json").values())


def test_ddp_cpu_trains_a_bi_encoder_on_both_processes_passages(tmp_path: Path, cache: Path) -> None:
    """trainer=ddp_cpu (2 gloo processes): the run trains on half the questions per process with the other
    process's passages as negatives, validates once over the whole corpus and exports once; here with separate
    question and passage encoders (model.shared=false), which retriever=dense then loads."""
    run_main("+experiment=dense_retriever", *SMALL, "trainer=ddp_cpu", "model.shared=false", run_dir=tmp_path / "run",
             cache_dir=cache)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["global_step"] == 6  # 96 questions, 48 per process, batches of 8
    assert metrics["examples"] == 90 and 0.0 <= metrics["recall@20"] <= 1.0
    exported = tmp_path / "run" / "retriever"
    assert read_json(exported / "dense_encoder.json")["shared"] is False
    assert (exported / "query" / "config.json").exists() and (exported / "passage" / "config.json").exists()
    from core.text_encoders import load_dense_encoder

    loaded = load_dense_encoder(str(exported))
    assert loaded.query_model is not loaded.passage_model
