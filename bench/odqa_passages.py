"""Open-domain QA as the number of retrieved passages grows: readers x top-k x {mode, weights}, in one run.

    python bench/odqa_passages.py --runs outputs/<mrc_curriculum run> outputs/<odqa_reader run> ...
    python bench/odqa_passages.py --runs <run> --top-k 1 5 --no-concat  # quicker

Every reader (a fit run dir: its ``.hydra/overrides.yaml`` rebuilds the run, ``checkpoints/last.ckpt`` holds
the weights) answers the validation questions three ways, through ``tasks.odqa.read_retrieved`` itself:

* **gold**: each question with its own passage only: the reference. Every other EM is also given as a
  ratio to it (``top-10 / gold >= 0.9`` is the target);
* **separate**: the top-``max(--top-k)`` passages are read once, one by one; top-k keeps the first k of each
  question (reading a passage does not depend on the others) and the spans are ranked with
  (a) no weights (the reader's span score alone), (b) the shipped defaults (``odqa.*`` in conf/config.yaml),
  (c) weights tuned by ``tasks.odqa_scoring.tune_weights`` on one half of the questions and applied to the
  other half, both ways round (2-fold cross-fitting: every question is answered by weights tuned without it);
* **concat**: the top-k passages joined into one context (the boostcamp baseline), read once per k.

The table goes to stdout (markdown) and, with ``--out``, to a JSON file. docs/odqa.md records a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import SAMPLE  # noqa: E402
from models.mrc_metrics import score_predictions  # noqa: E402
from retrievals.corpus import gold_passage_ids  # noqa: E402
from tasks.odqa import concatenated_answers, read_retrieved  # noqa: E402
from tasks.odqa_scoring import SpanWeights, choose_answers, tune_weights  # noqa: E402
from tasks.runner import compose_config  # noqa: E402


def run_overrides(run_dir: Path) -> list[str]:
    """The command line a fit run was made with, minus where it wrote (the bench writes under its own dir)."""
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8")) or []
    return [o for o in overrides if not o.startswith(("hydra.", "task=", "logger=", "ckpt_path="))]


def compose(run_dir: Path, work: Path, extra: list[str]) -> Any:
    return compose_config(
        [*run_overrides(run_dir), "task=odqa", "logger=none", "print_config=false",
         f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *extra],
        work,
    )


def em(gold: list, predictions: dict[str, str], ids: set[str] | None = None) -> float:
    subset = [ex for ex in gold if ids is None or ex["id"] in ids]
    return round(score_predictions(subset, predictions, "korquad")["exact_match"], 2)


def cross_fitted(reading: Any, retrieved: dict, gold: list) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Weights tuned on the even questions answer the odd ones, and the other way round."""
    halves = [{q.id for i, q in enumerate(reading.queries) if i % 2 == side} for side in (0, 1)]
    predictions: dict[str, str] = {}
    chosen = []
    for tune_ids, answer_ids in ((halves[0], halves[1]), (halves[1], halves[0])):
        tune_queries = [q for q in reading.queries if q.id in tune_ids]
        weights, _ = tune_weights(tune_queries, retrieved, reading.nbest, [ex for ex in gold if ex["id"] in tune_ids],
                                  "korquad")
        chosen.append(weights.as_dict())
        answer = [q for q in reading.queries if q.id in answer_ids]
        predictions.update(choose_answers(answer, retrieved, reading.nbest, weights)[0])
    return predictions, chosen


def bench_reader(run_dir: Path, top_ks: list[int], work: Path, extra: list[str], concat: bool) -> list[dict]:
    rows: list[dict[str, Any]] = []
    deepest = max(top_ks)
    reading = read_retrieved(compose(run_dir, work / "separate", [f"retriever.top_k={deepest}", *extra]), "separate")
    gold = reading.gold
    own = gold_passage_ids(reading.queries, reading.passages)
    by_id = {p.id: p for p in reading.passages}

    def gold_only(queries: list, passages: list) -> dict:
        return {q.id: [(by_id[sorted(own[q.id])[0]], 1.0)] for q in queries if own.get(q.id)}

    gold_reading = read_retrieved(compose(run_dir, work / "gold", ["retriever.top_k=1", *extra]), "separate",
                                  retrieve=gold_only)
    gold_em = em(gold, choose_answers(gold_reading.queries, gold_reading.retrieved, gold_reading.nbest)[0])
    defaults = compose(run_dir, work / "defaults", extra).odqa
    shipped = SpanWeights(float(defaults.retriever_weight), float(defaults.null_weight), str(defaults.retriever_score))
    for k in top_ks:
        retrieved = {q: hits[:k] for q, hits in reading.retrieved.items()}
        recall = sum(any(p.id in own.get(q, ()) for p, _ in hits) for q, hits in retrieved.items()) / len(retrieved)
        tuned, chosen = cross_fitted(reading, retrieved, gold)
        for name, predictions in (
            ("separate, no weights", choose_answers(reading.queries, retrieved, reading.nbest, SpanWeights())[0]),
            ("separate, defaults", choose_answers(reading.queries, retrieved, reading.nbest, shipped)[0]),
            ("separate, tuned (2-fold)", tuned),
        ):
            rows.append({"reader": run_dir.name, "top_k": k, "setting": name, "exact_match": em(gold, predictions),
                         "gold_exact_match": gold_em, f"recall@{k}": round(recall, 4),
                         **({"tuned_weights": chosen} if "tuned" in name else {})})
        if concat:
            joined = read_retrieved(compose(run_dir, work / f"concat{k}", [f"retriever.top_k={k}", *extra]), "concat")
            predictions, _ = concatenated_answers(joined.queries, joined.retrieved, joined.nbest)
            rows.append({"reader": run_dir.name, "top_k": k, "setting": "concat", "exact_match": em(gold, predictions),
                         "gold_exact_match": gold_em})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="fit run dirs (readers)")
    parser.add_argument("--top-k", nargs="+", type=int, default=[1, 5, 10, 20])
    parser.add_argument("--corpus", type=Path, default=SAMPLE / "corpus.jsonl")
    parser.add_argument("--work", type=Path, default=Path("outputs/bench_odqa"))
    parser.add_argument("--no-concat", action="store_true", help="skip the concat rows (one reading per k)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows here as JSON")
    args = parser.parse_args()
    extra = [f"retriever.corpus_file={args.corpus}"]
    rows: list[dict[str, Any]] = []
    for run_dir in args.runs:
        rows += bench_reader(run_dir.resolve(), sorted(args.top_k), args.work / run_dir.name, extra,
                             concat=not args.no_concat)
    print("| reader | setting | " + " | ".join(f"top-{k}" for k in sorted(args.top_k)) + " | gold passage |")
    print("|---|---|" + "---:|" * (len(args.top_k) + 1))
    for (reader, setting) in dict.fromkeys((r["reader"], r["setting"]) for r in rows):
        cells = {r["top_k"]: r for r in rows if r["reader"] == reader and r["setting"] == setting}
        gold = next(iter(cells.values()))["gold_exact_match"]
        scores = [f"{cells[k]['exact_match']:.1f} ({cells[k]['exact_match'] / gold:.2f})" if k in cells else "-"
                  for k in sorted(args.top_k)]
        print(f"| {reader} | {setting} | " + " | ".join(scores) + f" | {gold:.1f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
