"""``task=odqa``: open-domain QA, all in this module: retrieve passages (``tasks/retrieve.py``), turn them into
reader examples, read them with a fitted reader, and turn the reader's spans into one answer per question.

Two ways to read (``odqa.mode``):

* ``separate``: each (question, passage) pair is its own MRC example; the per-passage n-best lists are merged
  into one answer per question, a span ranked by its reader score, its window's no-answer score and its
  passage's retriever score (``tasks/odqa_scoring.py``; ``odqa.tune_weights=true`` chooses the weights).
* ``concat``: the question's passages, joined in rank order, form one context read once (the boostcamp
  baseline); spans of different passages then compete inside one softmax and the retriever score is unused.
"""

from __future__ import annotations

import bisect
import gc
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from core.files import write_json
from core.records import MRCExample
from datamodules.mrc_formats import load_mrc_examples
from retrievals.corpus import Passage, Query, gold_passage_ids
from tasks.build import (
    build_run,
    checkpoint_arg,
    require,
    verify_checkpoint,
)
from tasks.odqa_scoring import SEPARATOR, SpanWeights, choose_answers, tune_weights
from tasks.outputs import (
    metric_name,
    mrc_scores,
)
from tasks.retrieve import prepare_retriever, read_queries, retrieve_passages

__all__ = [
    "MODES",
    "Reading",
    "WEIGHTS_FILE",
    "concatenated_answers",
    "concatenated_examples",
    "passage_examples",
    "read_retrieved",
    "retrieve_for_reading",
    "span_weights",
    "task_odqa",
]

log = logging.getLogger(__name__)

MODES = ("separate", "concat")
WEIGHTS_FILE = "odqa_weights.json"


@dataclass
class Reading:
    """What reading the retrieved passages gave: the questions, their passages, the reader's n-best lists
    (per passage example in ``separate`` mode, per question in ``concat``) and the gold when the file has it.

    ``passages`` holds the passages retrieved and each question's gold passages (corpus order), not the corpus."""

    queries: list[Query]
    passages: list[Passage]
    retrieved: dict[str, list[tuple[Passage, float]]]
    nbest: dict[str, list[dict[str, Any]]]
    gold: list[MRCExample]
    questions_file: str
    split: str | None
    metrics: dict[str, Any]

    @property
    def has_gold(self) -> bool:
        return bool(self.gold) and all(ex["answers"] for ex in self.gold)


def read_retrieved(
    cfg: DictConfig, mode: str, retrieve: Callable[[list[Query], list[Passage]], dict] | None = None
) -> Reading:
    """Retrieve ``retriever.top_k`` passages per question (or what ``retrieve(queries, passages)`` returns) and
    read them with the reader of ``ckpt_path``, one by one or joined (``mode``).

    The retriever, its index and the corpus are freed before the reader is built (:func:`retrieve_for_reading`):
    ``Reading.passages`` holds only the passages retrieved and each question's gold passages."""
    ckpt = checkpoint_arg(cfg, "the reader checkpoint (a fit run's checkpoints/last.ckpt)")
    split_key = "test" if cfg.datamodule.get("test_file") else "validation"
    questions_file = require(cfg, f"datamodule.{split_key}_file", "the questions to answer")
    split = cfg.datamodule.get(f"{split_key}_split")
    queries = read_queries(questions_file, split=split)
    passages, retrieved, retrieval = retrieve_for_reading(cfg, queries, questions_file, split, retrieve)
    gc.collect()  # the index and the corpus are unreachable now: return their memory before the reader loads
    top_k = int(cfg.retriever.top_k)
    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    joiner = str(cfg.odqa.get("joiner", " "))
    examples = (
        concatenated_examples(queries, retrieved, joiner) if mode == "concat" else passage_examples(queries, retrieved)
    )
    run["datamodule"].provide_examples("test", examples)
    del examples  # the datamodule holds its own list
    run["trainer"].predict(
        run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, return_predictions=False, weights_only=True
    )
    metrics: dict[str, Any] = {
        "questions": len(queries),
        "passages_per_question": top_k,
        "retriever": retrieval["retriever"],
        "mode": mode,
        "index_seconds": retrieval["index_seconds"],
        "checkpoint": str(ckpt),
    }
    gold = load_mrc_examples(questions_file, require_answers=False, split=split)
    return Reading(queries, passages, retrieved, run["model"].last_nbest, gold, str(questions_file), split, metrics)


def retrieve_for_reading(
    cfg: DictConfig,
    queries: list[Query],
    questions_file: str,
    split: str | None,
    retrieve: Callable[[list[Query], list[Passage]], dict] | None = None,
) -> tuple[list[Passage], dict[str, list[tuple[Passage, float]]], dict[str, Any]]:
    """Index (or load) the corpus and retrieve, in a scope of its own, so that the retriever, its index and the
    corpus are freed when this returns, before the reader is built (at 60k passages they are hundreds of MB that
    reading would otherwise hold on top of its own peak). Returns the passages reading needs (those retrieved,
    and each question's gold passages, for recall; corpus order), the retrieved passages and the retrieval's
    ``retriever`` / ``index_seconds``."""
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
    retrieved = retrieve(queries, passages) if retrieve else retrieve_passages(retriever, passages, queries, top_k)
    needed = {p.id for hits in retrieved.values() for p, _ in hits}
    needed.update(pid for ids in gold_passage_ids(queries, passages).values() for pid in ids)
    kept = [p for p in passages if p.id in needed]
    summary = {"retriever": retriever.kind,
               "index_seconds": info.get("index_seconds", info.get("index_load_seconds"))}
    return kept, retrieved, summary


def task_odqa(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Retrieve ``retriever.top_k`` passages per question and read them: one by one (``odqa.mode=separate``,
    the best span by reader, no-answer and retriever scores, ``tasks/odqa_scoring.py``) or joined (``concat``);
    ``odqa.tune_weights`` first chooses the weights on these questions (``odqa_weights.json``)."""
    mode = str(cfg.odqa.get("mode", "separate"))
    if mode not in MODES:
        raise ValueError(f"odqa.mode={mode!r} is unknown: choose one of {', '.join(MODES)}.")
    metric_name(cfg)
    weights = span_weights(cfg)
    reading = read_retrieved(cfg, mode)
    queries, retrieved, passages, gold = reading.queries, reading.retrieved, reading.passages, reading.gold
    questions_file, split, has_gold = reading.questions_file, reading.split, reading.has_gold
    top_k, metrics = int(cfg.retriever.top_k), dict(reading.metrics)
    if mode == "concat":
        predictions, nbest = concatenated_answers(queries, retrieved, reading.nbest, str(cfg.odqa.get("joiner", " ")))
    else:
        if bool(cfg.odqa.get("tune_weights", False)):
            if not has_gold:
                raise ValueError(f"odqa.tune_weights=true chooses the weights on questions with answers: "
                                 f"{questions_file} has none (tune on the validation file, then pass "
                                 f"odqa.weights_file=<that run>/{WEIGHTS_FILE}).")
            weights, table = tune_weights(queries, retrieved, reading.nbest, gold, metric_name(cfg),
                                          weights.retriever_score)
            write_json(output_dir / WEIGHTS_FILE, {**weights.as_dict(), "tuned_on": str(questions_file),
                                                   "passages_per_question": top_k, "grid": table})
            log.info("odqa: chose null_weight=%s retriever_weight=%s on %d questions (%s)", weights.null_weight,
                     weights.retriever_weight, len(queries), output_dir / WEIGHTS_FILE)
            metrics["weights_tuned_on_these_questions"] = True
        predictions, nbest = choose_answers(queries, retrieved, reading.nbest, weights,
                                            n_best_size=int(cfg.model.n_best_size))
        metrics.update(weights.as_dict())
    write_json(output_dir / "predictions.json", predictions)
    write_json(output_dir / "nbest_predictions.json", nbest)
    write_json(
        output_dir / "retrieved.json",
        {qid: [{"passage_id": p.id, "score": s} for p, s in hits] for qid, hits in retrieved.items()},
    )
    if has_gold:
        metrics.update(mrc_scores(cfg, gold, predictions, questions_file, split))
        gold_passages = gold_passage_ids(queries, passages)
        hit = sum(any(p.id in gold_passages.get(q, ()) for p, _ in hits) for q, hits in retrieved.items())
        metrics[f"retrieval_recall@{top_k}"] = hit / max(len(retrieved), 1)
    return metrics


def span_weights(cfg: DictConfig) -> SpanWeights:
    """``odqa.weights_file`` (a tuned run's odqa_weights.json) when given, else ``odqa.null_weight`` /
    ``retriever_weight`` / ``retriever_score``."""
    node = cfg.odqa
    path = node.get("weights_file")
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"odqa.weights_file={path}: no such file (a task=odqa odqa.tune_weights=true "
                                    f"run writes <run dir>/{WEIGHTS_FILE}).")
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        try:
            return SpanWeights(float(saved["retriever_weight"]), float(saved["null_weight"]),
                               str(saved.get("retriever_score", "relative")))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"odqa.weights_file={path} is not a {WEIGHTS_FILE} ({error!r}): give the file a "
                             "task=odqa odqa.tune_weights=true run wrote.") from None
    return SpanWeights(float(node.get("retriever_weight", 0.0)), float(node.get("null_weight", 0.0)),
                       str(node.get("retriever_score", "relative")))


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
