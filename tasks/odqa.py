"""``task=odqa``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from core.files import write_json
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

log = logging.getLogger(__name__)


def task_odqa(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Retrieve ``retriever.top_k`` passages per question and read them: one by one (``odqa.mode=separate``,
    the best span by reader score + ``odqa.retriever_weight`` x retriever score) or joined (``concat``)."""
    from datamodules.mrc_formats import load_mrc_examples
    from retrievals.corpus import gold_passage_ids, load_queries
    from retrievals.odqa import (
        MODES,
        choose_answers,
        concatenated_answers,
        concatenated_examples,
        passage_examples,
    )
    from retrievals.task import prepare_retriever, retrieve_passages

    mode = str(cfg.odqa.get("mode", "separate"))
    if mode not in MODES:
        raise ValueError(f"odqa.mode={mode!r} is unknown: choose one of {', '.join(MODES)}.")
    metric_name(cfg)
    ckpt = checkpoint_arg(cfg, "the reader checkpoint (a fit run's checkpoints/last.ckpt)")
    split_key = "test" if cfg.datamodule.get("test_file") else "validation"
    questions_file = require(cfg, f"datamodule.{split_key}_file", "the questions to answer")
    split = cfg.datamodule.get(f"{split_key}_split")
    queries = load_queries(questions_file, split=split)
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
