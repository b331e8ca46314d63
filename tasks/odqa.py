"""``task=odqa``: open-domain QA, all in this module: retrieve passages (``tasks/retrieve.py``), turn them into
reader examples, read them with a fitted reader, and turn the reader's spans into one answer per question.

Two ways to read (``odqa.mode``):

* ``separate``: each (question, passage) pair is its own MRC example; the per-passage n-best lists are merged
  into one answer per question, a span ranked by its score plus ``retriever_weight`` x the passage's score.
* ``concat``: the question's passages, joined in rank order, form one context read once (the boostcamp
  baseline); spans of different passages then compete inside one softmax and the retriever score is unused.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from core.files import write_json
from core.records import MRCExample
from datamodules.mrc_formats import load_mrc_examples
from models.qa_postprocess import softmax
from retrievals.corpus import Passage, Query, gold_passage_ids
from tasks.build import (
    build_run,
    checkpoint_arg,
    require,
    verify_checkpoint,
)
from tasks.outputs import (
    metric_name,
    mrc_scores,
)
from tasks.retrieve import prepare_retriever, read_queries, retrieve_passages

__all__ = [
    "MODES",
    "choose_answers",
    "concatenated_answers",
    "concatenated_examples",
    "passage_examples",
    "task_odqa",
]

log = logging.getLogger(__name__)

SEPARATOR = "@@"  # a passage example's id: <question id>@@<rank>
MODES = ("separate", "concat")

def task_odqa(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Retrieve ``retriever.top_k`` passages per question and read them: one by one (``odqa.mode=separate``,
    the best span by reader score + ``odqa.retriever_weight`` x retriever score) or joined (``concat``)."""
    mode = str(cfg.odqa.get("mode", "separate"))
    if mode not in MODES:
        raise ValueError(f"odqa.mode={mode!r} is unknown: choose one of {', '.join(MODES)}.")
    metric_name(cfg)
    ckpt = checkpoint_arg(cfg, "the reader checkpoint (a fit run's checkpoints/last.ckpt)")
    split_key = "test" if cfg.datamodule.get("test_file") else "validation"
    questions_file = require(cfg, f"datamodule.{split_key}_file", "the questions to answer")
    split = cfg.datamodule.get(f"{split_key}_split")
    queries = read_queries(questions_file, split=split)
    retriever, passages, info = prepare_retriever(
        cfg.retriever,
        fallback_corpus_file=questions_file,
        fallback_corpus_split=split,
        queries=queries,
        questions_file=questions_file,
    )
    top_k = int(cfg.retriever.top_k)
    if top_k > len(passages):
        raise ValueError(
            f"retriever.top_k={top_k} is larger than the corpus ({len(passages)} passages): "
            f"set retriever.top_k<={len(passages)}."
        )
    retrieved = retrieve_passages(retriever, passages, queries, top_k)
    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    joiner = str(cfg.odqa.get("joiner", " "))
    examples = (
        concatenated_examples(queries, retrieved, joiner) if mode == "concat" else passage_examples(queries, retrieved)
    )
    run["datamodule"].provide_examples("test", examples)
    run["trainer"].predict(
        run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, return_predictions=False, weights_only=True
    )
    if mode == "concat":
        predictions, nbest = concatenated_answers(queries, retrieved, run["model"].last_nbest, joiner)
    else:
        predictions, nbest = choose_answers(
            queries,
            retrieved,
            run["model"].last_nbest,
            retriever_weight=float(cfg.odqa.retriever_weight),
            n_best_size=int(cfg.model.n_best_size),
        )
    write_json(output_dir / "predictions.json", predictions)
    write_json(output_dir / "nbest_predictions.json", nbest)
    write_json(
        output_dir / "retrieved.json",
        {qid: [{"passage_id": p.id, "score": s} for p, s in hits] for qid, hits in retrieved.items()},
    )
    metrics: dict[str, Any] = {
        "questions": len(queries),
        "passages_per_question": top_k,
        "retriever": retriever.kind,
        "mode": mode,
        "retriever_weight": float(cfg.odqa.retriever_weight) if mode == "separate" else None,
        "index_seconds": info.get("index_seconds", info.get("index_load_seconds")),
        "checkpoint": str(ckpt),
    }
    gold = load_mrc_examples(questions_file, require_answers=False, split=split)
    if gold and all(ex["answers"] for ex in gold):
        metrics.update(mrc_scores(cfg, gold, predictions, questions_file, split))
        gold_passages = gold_passage_ids(queries, passages)
        hit = sum(any(p.id in gold_passages.get(q, ()) for p, _ in hits) for q, hits in retrieved.items())
        metrics[f"retrieval_recall@{top_k}"] = hit / max(len(retrieved), 1)
    return metrics


# ----------------------------------------------------------------------------- retrieved passages <-> reader


def passage_examples(
    queries: Sequence[Query], retrieved: Mapping[str, Sequence[tuple[Passage, float]]]
) -> list[MRCExample]:
    """One unlabelled MRC example per (question, retrieved passage), id ``<question id>@@<rank>``."""
    examples: list[MRCExample] = []
    for query in queries:
        for rank, (passage, _score) in enumerate(retrieved.get(query.id, [])):
            examples.append(
                {
                    "id": f"{query.id}{SEPARATOR}{rank}",
                    "title": passage.title,
                    "context": passage.text,
                    "question": query.question,
                    "answers": [],
                    "document_id": passage.document_id,
                }
            )
    return examples


def choose_answers(
    queries: Sequence[Query],
    retrieved: Mapping[str, Sequence[tuple[Passage, float]]],
    passage_nbest: Mapping[str, Sequence[Mapping[str, Any]]],
    retriever_weight: float = 0.0,
    n_best_size: int = 20,
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Rank every span of every passage by ``span score + retriever_weight * retriever score``.

    The span score is the reader's start + end logit (comparable across passages, as in DrQA-style
    readers); the retriever score is what the retriever returned for the passage (BM25 or cosine).
    Questions whose passages yield no span get the empty answer.
    """
    predictions: dict[str, str] = {}
    nbest: dict[str, list[dict[str, Any]]] = {}
    for query in queries:
        candidates: list[dict[str, Any]] = []
        for rank, (passage, passage_score) in enumerate(retrieved.get(query.id, [])):
            for entry in passage_nbest.get(f"{query.id}{SEPARATOR}{rank}", []):
                if entry.get("start_logit") is None:  # a null answer, not a span
                    continue
                candidates.append(
                    {
                        "text": entry["text"],
                        "score": float(entry["score"]) + retriever_weight * float(passage_score),
                        "span_score": float(entry["score"]),
                        "retriever_score": float(passage_score),
                        "passage_id": passage.id,
                        "passage_rank": rank,
                        "offsets": entry["offsets"],
                    }
                )
        candidates.sort(key=lambda c: (-c["score"], c["passage_rank"], c["offsets"][0]))
        kept = candidates[:n_best_size]
        if kept:
            for entry, probability in zip(kept, softmax([c["score"] for c in kept]), strict=True):
                entry["probability"] = probability
        predictions[query.id] = kept[0]["text"] if kept else ""
        nbest[query.id] = kept
    return predictions, nbest


def concatenated_examples(
    queries: Sequence[Query], retrieved: Mapping[str, Sequence[tuple[Passage, float]]], joiner: str = " "
) -> list[MRCExample]:
    """One unlabelled MRC example per question (id: the question's): its passages joined by ``joiner``."""
    examples: list[MRCExample] = []
    for query in queries:
        passages = [passage for passage, _ in retrieved.get(query.id, [])]
        examples.append(
            {
                "id": query.id,
                "title": passages[0].title if passages else "",
                "context": joiner.join(p.text for p in passages),
                "question": query.question,
                "answers": [],
                "document_id": None,
            }
        )
    return examples


def concatenated_answers(
    queries: Sequence[Query],
    retrieved: Mapping[str, Sequence[tuple[Passage, float]]],
    nbest: Mapping[str, Sequence[Mapping[str, Any]]],
    joiner: str = " ",
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """The reader's answer per question (``""`` when it found no span), each n-best span tagged with the
    passage its start offset falls in (``passage_id``, ``passage_rank``, ``retriever_score``)."""
    predictions: dict[str, str] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    for query in queries:
        hits = retrieved.get(query.id, [])
        starts, cursor = [], 0
        for passage, _ in hits:
            starts.append(cursor)
            cursor += len(passage.text) + len(joiner)
        entries = []
        for entry in nbest.get(query.id, []):
            if entry.get("start_logit") is None:  # a null answer, not a span
                continue
            rank = bisect.bisect_right(starts, entry["offsets"][0]) - 1
            passage, passage_score = hits[rank]
            entries.append({**entry, "span_score": float(entry["score"]), "retriever_score": float(passage_score),
                            "passage_id": passage.id, "passage_rank": rank})
        predictions[query.id] = entries[0]["text"] if entries else ""
        out[query.id] = entries
    return predictions, out
