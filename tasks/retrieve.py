"""``task=retrieve`` (and the retrieval half of ``task=odqa``): build or load an index, search, score.

The retriever is whatever ``cfg.retriever`` names by ``_target_`` (``conf/retriever/*.yaml``, or a user's own
option in ``--config-dir``): it is instantiated from the node minus the task keys (:data:`TASK_KEYS`, whose
defaults are in ``conf/config.yaml``) and used through the :class:`retrievals.protocol.Retriever` protocol
only. MRC files (as a corpus or as the questions) are read here with ``datamodules.mrc_formats`` and handed to
``retrievals`` as records. Errors are :class:`DataFormatError` / ``ValueError`` / ``FileNotFoundError`` with a
message naming the file, the record and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from core.cache import build_lock
from core.errors import DataFormatError
from core.files import atomic_open, write_json
from datamodules.mrc_formats import load_mrc_examples
from retrievals.corpus import Passage, Query, gold_passage_ids, load_corpus, load_queries
from retrievals.metrics import CUTOFFS, mrr_at_k, plot_recall, retrieval_metrics
from retrievals.protocol import Retriever
from tasks.fusion_tuning import tune_weight

if TYPE_CHECKING:  # retrievals.rerank loads torch (~190 MB): imported only when retriever.rerank.model_path is set
    from retrievals.rerank import CrossEncoderReranker

__all__ = [
    "TASK_KEYS",
    "build_reranker",
    "instantiate_retriever",
    "plain_config",
    "prepare_retriever",
    "read_corpus",
    "read_queries",
    "retrieve_passages",
    "run_retrieve",
    "search_and_write",
    "task_retrieve",
]

log = logging.getLogger(__name__)

# Keys of cfg.retriever that configure the task, not the retriever class (defaults: conf/config.yaml).
TASK_KEYS = ("corpus_file", "corpus_split", "top_k", "index_dir", "rebuild_index", "allow_missing_gold",
             "tune_weight", "weight_grid", "rerank")
FUSION_FILE = "fusion_weights.json"
METRICS_DEPTH = max(CUTOFFS)
SEARCH_CHUNK = 2048  # questions searched at once by task=retrieve: bounds the depth-100 results held as lists
_TIMINGS = ("tokenize_seconds", "build_seconds")


def task_retrieve(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Index ``retriever.corpus_file`` (or the validation contexts) and retrieve for every question."""
    return run_retrieve(
        cfg.retriever,
        cfg.datamodule.get("validation_file"),
        output_dir,
        validation_split=cfg.datamodule.get("validation_split"),
    )


# ----------------------------------------------------------------------------- files


def mrc_examples(path: Path, split: str | None) -> list[Any]:
    """The MRC examples of a file (answers optional): what ``retrievals`` gets for an MRC corpus or questions file."""
    return load_mrc_examples(path, require_answers=False, split=split)


def read_corpus(path: str | os.PathLike[str], *, split: str | None = None) -> list[Passage]:
    """A passage corpus, or the de-duplicated contexts of an MRC file."""
    return load_corpus(path, split=split, mrc_examples=mrc_examples)


def read_queries(path: str | os.PathLike[str], *, split: str | None = None) -> list[Query]:
    """The questions of an MRC file (with gold), or of a questions-only file."""
    return load_queries(path, split=split, mrc_examples=mrc_examples)


# ----------------------------------------------------------------------------- the retriever


def plain_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A retriever node as a plain, resolved dict (a DictConfig is resolved when this is called)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def instantiate_retriever(node: Mapping[str, Any]) -> Retriever:
    """The retriever a config node (without the task keys) names by ``_target_``, checked to be one."""
    from hydra.utils import instantiate

    if "_target_" not in node:
        raise ValueError("retriever config has no _target_: use retriever=bm25 (tfidf, elasticsearch), or an option "
                         "of your own whose _target_ names a class with the retrievals.protocol.Retriever methods.")
    retriever = instantiate(dict(node), _convert_="all")
    if not isinstance(retriever, Retriever):
        missing = [name for name in ("kind", "index", "search", "save", "load", "params", "report")
                   if not hasattr(retriever, name)]
        raise ValueError(f"retriever._target_={node['_target_']!r} built a {type(retriever).__name__}, not a "
                         f"retriever: it lacks {', '.join(missing)} (the retrievals.protocol.Retriever protocol, "
                         "docs/extending.md).")
    return retriever


def prepare_retriever(
    retriever_cfg: DictConfig | Mapping[str, Any],
    *,
    fallback_corpus_file: str | os.PathLike[str] | None = None,
    fallback_corpus_split: str | None = None,
    queries: Sequence[Query] = (),
    questions_file: str | os.PathLike[str] | None = None,
) -> tuple[Retriever, list[Passage], dict[str, Any]]:
    """Load the corpus, then load the index from ``index_dir`` (checked against corpus and settings by the
    retriever's ``load``) or build it (and save it there). Returns the retriever, the passages and timing info.

    ``corpus_file: null`` uses the de-duplicated contexts of ``fallback_corpus_file`` (the questions file).
    ``queries`` with gold must find it in the corpus (before indexing), unless ``allow_missing_gold``.
    ``rerank.model_path`` set: the retriever comes back wrapped in a :class:`RerankedRetriever` (the
    cross-encoder is loaded before indexing, so a bad path fails at once; ``index_dir`` holds the base's index).
    """
    cfg = plain_config(retriever_cfg)
    task = {key: cfg.pop(key, None) for key in TASK_KEYS}
    corpus_file = task["corpus_file"] or fallback_corpus_file
    if not corpus_file:
        raise ValueError(
            "retrieval needs a corpus: set retriever.corpus_file=... (wikipedia_documents.json, a JSONL of "
            "{id, title, text}, or an MRC file whose contexts are the passages)."
        )
    if not task["corpus_file"]:
        log.info("retriever.corpus_file is null: retrieving among the contexts of %s", corpus_file)
    split = task["corpus_split"] or (None if task["corpus_file"] else fallback_corpus_split)
    passages = read_corpus(corpus_file, split=split)
    if not task["allow_missing_gold"]:
        check_gold_in_corpus(queries, passages, corpus_file, questions_file)
    fresh = instantiate_retriever(cfg)
    reranker = build_reranker(task["rerank"])
    info: dict[str, Any] = {"corpus_file": str(corpus_file), "passages": len(passages)}

    def wrapped(retriever: Retriever) -> Retriever:
        if reranker is None:
            return retriever
        from retrievals.rerank import RerankedRetriever

        return RerankedRetriever(retriever, reranker).use_passages(passages)

    if not task["index_dir"]:
        return wrapped(_build_index(fresh, passages, corpus_file, info)), passages, info
    index_dir = Path(task["index_dir"])
    with build_lock(index_dir):  # concurrent runs on one index_dir: one builds and saves, the others load
        if (index_dir / "manifest.json").exists() and not task["rebuild_index"]:
            start = time.perf_counter()
            retriever = type(fresh).load(index_dir, passages=passages, like=fresh)
            info.update(index_loaded=True, index_load_seconds=round(time.perf_counter() - start, 4))
            log.info("Loaded the %s index %s (%d passages)", retriever.kind, index_dir, len(passages))
            return wrapped(retriever), passages, info
        _build_index(fresh, passages, corpus_file, info).save(index_dir)
    info["index_dir"] = str(index_dir)
    log.info("Saved the %s index to %s", fresh.kind, index_dir)
    return wrapped(fresh), passages, info


def build_reranker(node: Mapping[str, Any] | None) -> CrossEncoderReranker | None:
    """The cross-encoder of ``retriever.rerank`` (None when its ``model_path`` is null)."""
    settings = dict(node or {})
    if not settings.get("model_path"):
        return None
    from retrievals.rerank import CrossEncoderReranker

    try:
        return CrossEncoderReranker(**settings)
    except TypeError as error:  # an unknown key under retriever.rerank
        raise ValueError(f"retriever.rerank: {error}; its keys are model_path, top_n, batch_size, max_length, "
                         "device, index_title (conf/config.yaml).") from None


def _build_index(
    retriever: Retriever, passages: list[Passage], corpus_file: str | os.PathLike[str], info: dict[str, Any]
) -> Retriever:
    """Index ``passages``; the seconds it took go into ``info``."""
    start = time.perf_counter()
    retriever.index(passages, source=str(corpus_file))
    wall = time.perf_counter() - start
    report = retriever.report()
    parts = [report.get(key) for key in _TIMINGS]
    timed = all(isinstance(part, (int, float)) for part in parts)
    tokenize_s, build_s = (float(parts[0]), float(parts[1])) if timed else (None, None)
    info.update(
        index_loaded=False,
        # tokenising (or reading the token cache) + building; index_wall_seconds adds one-off start-up
        # (loading the corpus-independent kernels). A retriever that reports no parts: the wall time.
        index_seconds=round(tokenize_s + build_s, 4) if timed else round(wall, 4),
        **({"tokenize_seconds": round(tokenize_s, 4), "build_seconds": round(build_s, 4)} if timed else {}),
        index_wall_seconds=round(wall, 4),
    )
    return retriever


def check_gold_in_corpus(
    queries: Sequence[Query],
    passages: Sequence[Passage],
    corpus_file: str | os.PathLike[str],
    questions_file: str | os.PathLike[str] | None,
) -> None:
    """Every question with gold must find it in the corpus: otherwise recall and ODQA scores measure the corpus.

    Checked before indexing, so a questions file written for another corpus (another Wikipedia dump) fails
    in seconds. ``retriever.allow_missing_gold=true`` counts such questions as misses instead.
    """
    gold = gold_passage_ids(queries, passages)
    missing = [q for q in queries if q.id in gold and not gold[q.id]]
    if not missing:
        return
    first = missing[0]
    if first.document_id is not None:
        own = f"its document_id is {first.document_id!r}"
    else:
        own = f"its context starts {(first.context or '')[:30]!r}"
    others = f"; others: {[q.id for q in missing[1:4]]}" if len(missing) > 1 else ""
    raise DataFormatError(
        questions_file or "the questions", first.id,
        f"{len(missing)} of {len(gold)} questions have no gold passage in the corpus {corpus_file}: neither "
        f"their document_id nor their context is in it ({own}{others})",
        "retrieve from the corpus these questions were written on (retriever.corpus_file=...), or set "
        "retriever.allow_missing_gold=true to count these questions as misses",
    )


def tune_fusion(
    retriever: Retriever, queries: Sequence[Query], passages: Sequence[Passage], grid: Sequence[float],
    out_dir: Path, questions_file: str,
) -> dict[str, Any]:
    """``retriever.tune_weight``: choose the hybrid's fusion weight on these questions (``tasks/fusion_tuning.py``),
    use it, and write it with the grid's scores to ``fusion_weights.json``."""
    from retrievals.rerank import RerankedRetriever  # a reranked retriever exists only if rerank loaded it

    hybrid = retriever.base if isinstance(retriever, RerankedRetriever) else retriever
    gold = gold_passage_ids(queries, passages)
    weight, table = tune_weight(hybrid, [q.question for q in queries], [q.id for q in queries], gold, grid)
    hybrid.weight = weight  # tune_weight checked that it is a HybridRetriever
    write_json(out_dir / FUSION_FILE, {"fusion": "linear", "weight": weight, "tuned_on": questions_file,
                                       "objective": "mean of recall@1, recall@5, recall@20", "grid": table})
    log.info("retriever.tune_weight: chose weight=%s on %d questions (%s)", weight, len(queries),
             out_dir / FUSION_FILE)
    return {"weight": weight, "weight_tuned_on_these_questions": True}


def retrieve_passages(
    retriever: Retriever, passages: Sequence[Passage], queries: Sequence[Query], k: int
) -> dict[str, list[tuple[Passage, float]]]:
    """question id -> its top-``k`` passages (objects, for a reader) with scores."""
    by_id = {p.id: p for p in passages}
    result = retriever.search([q.question for q in queries], k)
    return {
        q.id: [(by_id[pid], score) for pid, score in zip(ids, scores, strict=True)]
        for q, ids, scores in zip(queries, result.ids, result.scores, strict=True)
    }


# ----------------------------------------------------------------------------- task=retrieve


def search_and_write(
    retriever: Retriever, queries: Sequence[Query], top_k: int, depth: int, path: Path
) -> tuple[dict[str, list[str]], float, int]:
    """Search ``SEARCH_CHUNK`` questions at a time at ``depth`` and stream ``retrieved.json`` (each question's top
    ``top_k``; the same text as ``write_json`` of the whole mapping, written atomically) as the chunks come.

    Returns each question's ranked passage ids at ``depth`` (for the metrics; the scores below ``top_k`` are
    dropped chunk by chunk), the seconds spent searching and the number of questions without results. The whole
    mapping encoded at once by ``json.dumps(indent=2)`` (pure Python) was the peak of a 20k-passage run.
    """
    ranked: dict[str, list[str]] = {}
    seconds, empty, separator = 0.0, 0, "\n"
    with atomic_open(path) as handle:
        handle.write("{" if queries else "{}")
        for begin in range(0, len(queries), SEARCH_CHUNK):
            part = queries[begin : begin + SEARCH_CHUNK]
            start = time.perf_counter()
            result = retriever.search([q.question for q in part], depth)
            seconds += time.perf_counter() - start
            for q, ids, scores in zip(part, result.ids, result.scores, strict=True):
                hits = [{"passage_id": pid, "score": round(float(s), 6)}
                        for pid, s in zip(ids[:top_k], scores[:top_k], strict=True)]
                # one "key": value item of the indented mapping: the dump of {key: value} without "{\n", "\n}"
                handle.write(separator + json.dumps({q.id: hits}, ensure_ascii=False, indent=2)[2:-2])
                separator = ",\n"
                ranked[q.id] = ids
                empty += not ids
        if queries:
            handle.write("\n}")
    return ranked, seconds, empty


def run_retrieve(
    retriever_cfg: DictConfig | Mapping[str, Any],
    validation_file: str | os.PathLike[str] | None,
    run_dir: str | os.PathLike[str],
    *,
    validation_split: str | None = None,
) -> dict[str, Any]:
    """Retrieve for every question of ``validation_file`` and write, into ``run_dir``:

    * ``retrieved.json``: ``{question id: [{"passage_id", "score"}, ...]}`` (``retriever.top_k`` each);
    * when gold is known: ``retrieval_metrics.json`` (recall@1/5/10/20/50/100, mrr@100, index_seconds,
      queries_per_second, ...) and ``recall_at_k.png``.

    Without a questions file only the index is built (and saved to ``retriever.index_dir``).
    Returns the metrics (timings and counts when there is no gold).
    """
    out_dir = Path(run_dir)
    cfg = plain_config(retriever_cfg)
    top_k = cfg.get("top_k") or 20
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"retriever.top_k={top_k!r}: must be a positive integer.")
    queries = read_queries(validation_file, split=validation_split) if validation_file else []
    retriever, passages, info = prepare_retriever(
        cfg, fallback_corpus_file=validation_file, fallback_corpus_split=validation_split, queries=queries,
        questions_file=validation_file,
    )
    described = {k: v for k, v in retriever.report().items() if k not in _TIMINGS}
    metrics: dict[str, Any] = {
        "retriever": retriever.kind,
        **{k: v for k, v in retriever.params().items() if v is not None},
        **described,
        "top_k": top_k,
        **info,
        "index_seconds": info.get("index_seconds", info.get("index_load_seconds")),
    }
    if not queries:
        log.info("No questions file (datamodule.validation_file): built the index only")
        return metrics
    if top_k > len(passages):
        raise ValueError(
            f"retriever.top_k={top_k} is larger than the corpus ({len(passages)} passages in "
            f"{info['corpus_file']}): set retriever.top_k<={len(passages)}."
        )
    if cfg.get("tune_weight"):
        metrics.update(tune_fusion(retriever, queries, passages, cfg.get("weight_grid") or (), out_dir,
                                   str(validation_file)))
    depth = min(max(top_k, METRICS_DEPTH), len(passages))
    gold = gold_passage_ids(queries, passages)
    kind, corpus_file = retriever.kind, info["corpus_file"]
    del passages  # the index holds what the search needs (a reranker holds its own reference)
    ranked, seconds, empty = search_and_write(retriever, queries, top_k, depth, out_dir / "retrieved.json")
    del retriever  # the index is not needed for scoring and plotting: free it before matplotlib loads
    metrics.update(questions=len(queries), search_k=depth, search_seconds=round(seconds, 4),
                   queries_per_second=round(len(queries) / seconds, 2) if seconds > 0 else None,
                   questions_without_results=empty)
    if not gold:
        log.info("The questions carry no gold context or document_id: wrote retrieved.json only")
        return metrics
    scores = retrieval_metrics(ranked, gold, CUTOFFS, mrr_k=METRICS_DEPTH)
    scores["mrr@10"] = mrr_at_k(ranked, gold, 10)  # what model=biencoder / cross_encoder validation reports
    if scores["gold_not_in_corpus"]:  # only with retriever.allow_missing_gold=true
        log.warning("%d of %d questions have no gold passage in the corpus (their context / document_id is "
                    "not in %s); they count as misses", scores["gold_not_in_corpus"], len(gold), corpus_file)
    metrics = {**scores, **metrics}
    write_json(out_dir / "retrieval_metrics.json", metrics)
    tokenizer = f" ({described['tokenizer']})" if described.get("tokenizer") else ""
    title = f"{kind}{tokenizer} on {Path(str(validation_file)).name}"
    plot_recall(scores, out_dir / "recall_at_k.png", title=title)
    return metrics
