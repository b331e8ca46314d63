"""Span decoding: this framework against Hugging Face ``utils_qa.postprocess_qa_predictions``, same predictions.

    nice -n 19 python bench/postprocess.py                 # 6,000 questions
    python bench/postprocess.py --examples 20000
    python bench/postprocess.py --quick                    # seconds-long smoke run

Questions: the embedded training and validation sets, topped up with generated long-context questions
(passages concatenated, many doc-stride windows) to ``--examples``. Windows: the framework's
``build_eval_features`` with the tiny backbone's tokenizer (``max_seq_length`` 256, ``doc_stride`` 128);
the reference gets the same windows in run_qa's layout (``example_id``; ``offset_mapping`` ``None`` outside
the context). Logits: seeded random, model-like (context tokens N(0, 2) with a peak at one span per
window; question and special tokens N(-8, 1), as a trained reader scores them; padding -100 as run_qa's
``create_and_fill_np_array`` fills it), float32.

* reference: ``postprocess_qa_predictions`` from transformers' ``examples/pytorch/question-answering/utils_qa.py``,
  re-implemented line by line in ``bench/_utils_qa.py`` (SQuAD v1: ``version_2_with_negative=False``;
  progress bar, logging and file output left out), ``n_best_size`` 20, ``max_answer_length`` 30. Timed twice: on
  ``datasets.Dataset`` examples and features, which is what run_qa's ``post_processing_function`` passes it,
  and on plain Python lists (the algorithm alone).
* ours: what ``ExtractiveReader`` does: ``topk_candidates`` on every batch of ``eval_batch_size`` windows
  during the validation loop (context-masked top-k), then ``SpanCandidates`` gathers them and
  ``decode_predictions`` turns them into answers at the epoch end. Both parts are timed.

Predictions must be identical (the script asserts it and prints the agreement; it exits with an error
naming the first differing questions otherwise). The logits push question tokens down because ours takes
its top-k among context tokens only (``utils_qa`` takes it over all tokens and then skips non-context
ones): where a model scores question tokens high, the two may legitimately differ, ours being the fix.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    SAMPLE,
    build_shared_backbone,
    load_examples,
    long_examples,
    machine_line,
    number,
    ratio,
    silenced,
    table,
)
from bench._utils_qa import postprocess_qa_predictions  # noqa: E402

__all__ = ["postprocess_qa_predictions"]  # bench/inference.py and others import it from here too


class Rows(list):
    """A list of row dicts that also answers ``rows["column"]``, as a ``datasets.Dataset`` does."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return [row[key] for row in self]
        return super().__getitem__(key)


# ----------------------------------------------------------------------------- inputs


def question_set(n: int, seed: int) -> list[dict[str, Any]]:
    """The embedded questions (train + validation), topped up with generated long-context ones to ``n``."""
    examples = load_examples(SAMPLE / "train.json") + load_examples(SAMPLE / "validation.json")
    if n > len(examples):
        examples += long_examples(examples, n - len(examples), seed=seed)
    rng = np.random.default_rng(seed)
    return [examples[i] for i in sorted(rng.choice(len(examples), n, replace=False))]


def fake_logits(
    features: dict[str, list], seed: int, masked: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model-like logits ``(F, L)`` and context masks; ``masked``: non-context tokens score low."""
    rng = np.random.default_rng(seed)
    lengths = [len(ids) for ids in features["input_ids"]]
    width = max(lengths)
    start = np.full((len(lengths), width), -100.0, dtype=np.float32)
    end = np.full((len(lengths), width), -100.0, dtype=np.float32)
    context = np.zeros((len(lengths), width), dtype=bool)
    for row, (size, mask) in enumerate(zip(lengths, features["context_mask"], strict=True)):
        is_context = np.asarray(mask, dtype=bool)
        context[row, :size] = is_context
        start[row, :size] = rng.normal(0.0, 2.0, size)
        end[row, :size] = rng.normal(0.0, 2.0, size)
        if masked:
            outside = ~is_context
            start[row, :size][outside] = rng.normal(-8.0, 1.0, int(outside.sum()))
            end[row, :size][outside] = rng.normal(-8.0, 1.0, int(outside.sum()))
        positions = np.flatnonzero(is_context)
        if len(positions):  # one likely span per window, as a trained reader would give
            first = int(rng.choice(positions))
            last = min(first + int(rng.integers(0, 6)), int(positions[-1]))
            start[row, first] += 6.0
            end[row, last] += 6.0
    return start, end, context


def runqa_features(examples: list[dict[str, Any]], features: dict[str, list]) -> list[dict[str, Any]]:
    """The framework's windows in run_qa's eval layout (``example_id``; ``None`` offsets outside the context)."""
    rows = []
    for i, offsets in enumerate(features["offset_mapping"]):
        rows.append(
            {
                "input_ids": features["input_ids"][i],
                "attention_mask": features["attention_mask"][i],
                "offset_mapping": [
                    tuple(o) if c else None for o, c in zip(offsets, features["context_mask"][i], strict=True)
                ],
                "example_id": examples[features["example_index"][i]]["id"],
            }
        )
    return rows


# ----------------------------------------------------------------------------- ours


def ours_decode(
    examples: list[dict[str, Any]],
    features: dict[str, list],
    start: np.ndarray,
    end: np.ndarray,
    context: np.ndarray,
    batch_size: int,
    n_best: int,
    max_answer_length: int,
) -> tuple[dict[str, str], dict[str, list], float, float]:
    """As ``ExtractiveReader``: top-k per batch in the loop, decode at the epoch end. Returns both times."""
    import torch

    from models.qa_postprocess import decode_predictions, null_scores_at, topk_candidates
    from models.span_candidates import SpanCandidates

    batches = []  # what the model hands over each step (built outside the clock)
    for s in range(0, len(start), batch_size):
        width = int(max(len(ids) for ids in features["input_ids"][s : s + batch_size]))
        batches.append(
            (
                torch.from_numpy(start[s : s + batch_size, :width]),
                torch.from_numpy(end[s : s + batch_size, :width]),
                torch.from_numpy(context[s : s + batch_size, :width]),
                torch.arange(s, min(s + batch_size, len(start))),
            )
        )
    candidates = SpanCandidates()
    t0 = time.perf_counter()
    for start_logits, end_logits, mask, index in batches:
        null = null_scores_at(start_logits, end_logits, torch.zeros(len(index), dtype=torch.long))
        candidates.update(index, *topk_candidates(start_logits, end_logits, mask, n_best), null)
    t1 = time.perf_counter()
    state = candidates.compute()
    predictions, nbest = decode_predictions(
        examples,
        features["example_index"],
        features["offset_mapping"],
        state["feature_index"],
        state["start_idx"],
        state["start_val"],
        state["end_idx"],
        state["end_val"],
        n_best_size=n_best,
        max_answer_length=max_answer_length,
    )
    t2 = time.perf_counter()
    return predictions, nbest, t1 - t0, t2 - t1


# ----------------------------------------------------------------------------- driver


def agreement(ours: dict[str, str], reference: dict[str, str]) -> tuple[int, list[str]]:
    same = [key for key in reference if ours.get(key) == reference[key]]
    return len(same), [key for key in reference if ours.get(key) != reference[key]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--examples", type=int, default=6000, help="questions to decode (>= 5,000 for the issue)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median)")
    parser.add_argument("--n-best", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    parser.add_argument("--eval-batch-size", type=int, default=64, help="windows per validation step (top-k)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (300 questions)")
    args = parser.parse_args()
    if args.quick:
        args.examples, args.repeats = 300, 1

    from datasets import Dataset, disable_progress_bars
    from transformers import AutoTokenizer

    from datamodules.mrc_features import build_eval_features

    disable_progress_bars()
    began = time.perf_counter()
    print(f"# Span decoding ({machine_line()})")
    with tempfile.TemporaryDirectory(prefix="bench-postprocess-") as tmp:
        work = Path(tmp)
        with silenced(work / "setup.log"):
            backbone = build_shared_backbone(work / "backbone", work / "cache", args.seed)
            tokenizer = AutoTokenizer.from_pretrained(str(work / "backbone"))
        examples = question_set(args.examples, args.seed)
        settings = {k: backbone[k] for k in ("max_seq_length", "doc_stride", "max_query_length")}
        features = build_eval_features(examples, tokenizer, **settings)
    start, end, context = fake_logits(features, args.seed)
    reference_rows = runqa_features(examples, features)
    example_rows = Rows({"id": ex["id"], "context": ex["context"]} for ex in examples)
    example_table = Dataset.from_list(
        [
            {
                "id": ex["id"],
                "title": ex.get("title") or "",
                "context": ex["context"],
                "question": ex["question"],
            }
            for ex in examples
        ]
    )
    feature_table = Dataset.from_list(reference_rows)
    print(
        f"{len(examples):,} questions -> {len(reference_rows):,} windows (max_seq_length {settings['max_seq_length']}, "
        f"doc_stride {settings['doc_stride']}); n_best_size {args.n_best}, max_answer_length "
        f"{args.max_answer_length}; median of {args.repeats} run(s)."
    )

    def reference(rows_examples: Any, rows_features: Any) -> tuple[float, dict[str, str], dict[str, list]]:
        t = time.perf_counter()
        predictions, nbest = postprocess_qa_predictions(
            rows_examples,
            rows_features,
            (start, end),
            n_best_size=args.n_best,
            max_answer_length=args.max_answer_length,
        )
        return time.perf_counter() - t, predictions, nbest

    timings: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(args.repeats):
        seconds, ref_predictions, ref_nbest = reference(example_table, feature_table)
        timings["reference-datasets"].append(seconds)
        seconds, plain_predictions, _ = reference(example_rows, Rows(reference_rows))
        timings["reference-lists"].append(seconds)
        ours_predictions, ours_nbest, topk_s, decode_s = ours_decode(
            examples, features, start, end, context, args.eval_batch_size, args.n_best, args.max_answer_length
        )
        timings["ours-topk"].append(topk_s)
        timings["ours-decode"].append(decode_s)
        timings["ours"].append(topk_s + decode_s)
    median = {k: statistics.median(v) for k, v in timings.items()}
    n = len(examples)
    rows = [
        ["utils_qa postprocess_qa_predictions on datasets.Dataset (as run_qa)", median["reference-datasets"]],
        ["utils_qa postprocess_qa_predictions on Python lists", median["reference-lists"]],
        ["ours: topk_candidates per batch + decode_predictions", median["ours"]],
        ["  of which topk_candidates (in the validation loop)", median["ours-topk"]],
        ["  of which decode_predictions (epoch end)", median["ours-decode"]],
    ]
    body = [
        [
            label,
            f"{seconds:.3f}",
            number(n / seconds),
            "-" if label.startswith(" ") else ratio(median["reference-datasets"], seconds),
            "-" if label.startswith(" ") else ratio(median["reference-lists"], seconds),
        ]
        for label, seconds in rows
    ]
    print()
    print(table(["what", "seconds", "questions/s", "speed vs run_qa", "speed vs lists"], body))

    same, differ = agreement(ours_predictions, ref_predictions)
    same_plain, _ = agreement(plain_predictions, ref_predictions)
    nbest_same = sum(
        [e["text"] for e in ours_nbest.get(key, [])] == [e["text"] for e in ref_nbest[key]]
        for key in ref_nbest
    )
    print(
        f"\nagreement with utils_qa: predictions {same:,}/{n:,} ({100 * same / n:.2f}%); n-best texts in order "
        f"{nbest_same:,}/{n:,} ({100 * nbest_same / n:.2f}%); utils_qa on lists vs on datasets {same_plain:,}/{n:,}"
    )

    print(f"\ntotal {time.perf_counter() - began:.0f}s")
    if same != n:
        examples_by_id = {ex["id"]: ex for ex in examples}
        for key in differ[:5]:
            print(
                f"  differs: {key}: ours {ours_predictions.get(key)!r} vs utils_qa {ref_predictions[key]!r} "
                f"(question {examples_by_id[key]['question']!r})"
            )
        raise SystemExit(f"predictions differ from utils_qa for {n - same} of {n} questions")


if __name__ == "__main__":
    main()
