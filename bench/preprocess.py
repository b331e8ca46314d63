"""Doc-stride feature building: this framework against run_qa's ``prepare_*_features``, and cache hits.

    nice -n 19 python bench/preprocess.py          # embedded set + generated long set, median of 3
    python bench/preprocess.py --quick             # seconds-long smoke run

Same tokenizer for every row (``+experiment=mrc_curriculum``'s tiny backbone's, trained on the embedded text), same
``max_seq_length`` / ``doc_stride`` (the datamodule's), same questions. Each cell is the median of
``--repeats`` runs in this process (the tokenizer is loaded afresh before each, outside the clock).

* run_qa rows: ``prepare_train_features`` / ``prepare_validation_features`` copied from transformers'
  ``run_qa.py`` (``bench/_runqa.py``), run as run_qa runs them: ``Dataset.map(batched=True)``. run_qa pads
  every feature to ``max_seq_length`` by default (``--pad_to_max_length``); the framework pads per batch at
  collate time, so the like-for-like reference is run_qa without padding.
* ours: ``datamodules.mrc_features.build_train_features`` / ``build_eval_features`` (the function alone).
* cold / cache hit, as a second run of each tool finds it: run_qa reads its data with
  ``load_dataset("json")`` and maps it with ``datasets``' cache files (cold: an empty cache directory; hit:
  the same call again, which reloads both Arrow files). Ours is what ``MRCDataModule.setup`` does:
  ``cached_mrc_examples`` (cold: read + validate the JSON and write its records as ``.npy`` columns; hit:
  hash the file's bytes and map them), ``cached_features`` (key from the examples' digest, the tokenizer
  and the settings; cold: build, write ``.npy`` columns, memory-map them; hit: memory-map them) and the
  datamodule's feature table over those columns (rows read on demand, as run_qa's Trainer reads its
  memory-mapped Arrow table).

features/s = training (or evaluation) windows per second; "vs run_qa" = our features/s / run_qa's in the
row's like-for-like reference (named), measured in the same run: each round runs the reference and ours one
after the other (``timed``), so on a busy machine both see the same load; the per-round ratios follow each table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    add_dataset_arguments,
    build_shared_backbone,
    dataset_names,
    describe_dataset,
    load_examples,
    machine_line,
    number,
    prepare_datasets,
    ratio,
    silenced,
    table,
    write_squad,
)
from bench._runqa import prepare_train_features, prepare_validation_features, runqa_columns  # noqa: E402

Timed = tuple[Callable[[], int], Callable[[], None] | None]


def timed(
    group: dict[str, Timed], repeats: int, runs: dict[str, list[float]]
) -> dict[str, tuple[float, int]]:
    """Median seconds and feature count of each ``(fn, before)`` of ``group`` over ``repeats`` rounds.

    Each round runs every member once, in turn: on a busy machine a reference and ours then see the same load,
    so their ratio holds where separate blocks of repeats would each catch another moment. ``runs`` collects
    every round's seconds (for the per-round ratios).
    """
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for key, (fn, before) in group.items():
            if before is not None:
                before()
            start = time.perf_counter()
            counts[key] = fn()
            runs.setdefault(key, []).append(time.perf_counter() - start)
    return {key: (statistics.median(runs[key]), counts[key]) for key in group}


def bench_dataset(
    name: str, info: dict[str, Any], backbone_dir: Path, settings: dict[str, int], args: Any, work: Path
) -> None:
    from datasets import Dataset, disable_progress_bars, load_dataset
    from transformers import AutoTokenizer

    from datamodules.mrc import FeatureTable
    from datamodules.mrc_example_cache import cached_mrc_examples
    from datamodules.mrc_feature_cache import cached_features
    from datamodules.mrc_features import build_eval_features, build_train_features

    train_keys = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")

    disable_progress_bars()
    limit = args.max_examples
    train_file = Path(info["train_file"])
    train = load_examples(train_file, limit)
    if limit:  # the cold / hit rows read a file: write the cut set
        train_file = write_squad(work / name / "train.json", train)
    jsonl = work / name / "train.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in runqa_columns(train)), encoding="utf-8"
    )
    train_table = Dataset.from_list(runqa_columns(train))
    state: dict[str, Any] = {}

    def fresh_tokenizer() -> None:
        state["tokenizer"] = AutoTokenizer.from_pretrained(str(backbone_dir))

    def runqa_map(table: Any, fn: Callable[..., Any], pad: bool) -> Callable[[], int]:
        def run() -> int:
            kwargs = {"tokenizer": state["tokenizer"], "pad_to_max_length": pad, **runqa_settings}
            return len(table.map(fn, batched=True, remove_columns=table.column_names, fn_kwargs=kwargs))

        return run

    runqa_settings = {"max_seq_length": settings["max_seq_length"], "doc_stride": settings["doc_stride"]}

    def runqa_disk(cache: Path) -> Callable[[], int]:
        def run() -> int:
            raw = load_dataset("json", data_files=str(jsonl), split="train", cache_dir=str(cache))
            kwargs = {"tokenizer": state["tokenizer"], "pad_to_max_length": False, **runqa_settings}
            mapped = raw.map(
                prepare_train_features, batched=True, remove_columns=raw.column_names, fn_kwargs=kwargs
            )
            state["runqa_cache_files"] = sorted(f["filename"] for f in mapped.cache_files)
            return len(mapped)

        return run

    def ours_setup(cache: Path) -> Callable[[], int]:
        def run() -> int:
            examples = cached_mrc_examples(train_file, cache)  # as MRCDataModule.load_examples
            columns = cached_features(build_train_features, examples, state["tokenizer"], cache, **settings)
            return len(FeatureTable(columns, train_keys))  # as MRCDataModule._setup_train

        return run

    def clear(path: Path) -> Callable[[], None]:
        def before() -> None:
            shutil.rmtree(path, ignore_errors=True)
            fresh_tokenizer()

        return before

    repeats, runs = args.repeats, {}
    rows: dict[str, tuple[float, int]] = {}
    rows |= timed(
        {
            "runqa-pad": (runqa_map(train_table, prepare_train_features, True), fresh_tokenizer),
            "runqa": (runqa_map(train_table, prepare_train_features, False), fresh_tokenizer),
            "ours": (
                lambda: len(build_train_features(train, state["tokenizer"], **settings)["input_ids"]),
                fresh_tokenizer,
            ),
        },
        repeats,
        runs,
    )
    hf_cache, our_cache = work / name / "hf-cache", work / name / "our-cache"
    rows |= timed(
        {
            "runqa-cold": (runqa_disk(hf_cache), clear(hf_cache)),
            "ours-cold": (ours_setup(our_cache), clear(our_cache)),
        },
        repeats,
        runs,
    )
    cold_files = state.get("runqa_cache_files")
    rows |= timed(
        {
            "runqa-hit": (runqa_disk(hf_cache), fresh_tokenizer),
            "ours-hit": (ours_setup(our_cache), fresh_tokenizer),
        },
        repeats,
        runs,
    )
    runqa_hit = state.get("runqa_cache_files") == cold_files
    rows |= timed(
        {
            "runqa-eval": (runqa_map(train_table, prepare_validation_features, False), fresh_tokenizer),
            "ours-eval": (
                lambda: len(build_eval_features(train, state["tokenizer"], **settings)["input_ids"]),
                fresh_tokenizer,
            ),
        },
        repeats,
        runs,
    )

    labels = {
        "runqa-pad": ("run_qa prepare_train_features, padded to max_seq_length (run_qa default)", "runqa"),
        "runqa": ("run_qa prepare_train_features, no padding", "runqa"),
        "ours": ("ours build_train_features", "runqa"),
        "runqa-cold": ("run_qa cold: load_dataset(json) + map, empty cache", "runqa-cold"),
        "ours-cold": ("ours cold: read + check the JSON, build features, write both, map", "runqa-cold"),
        "runqa-hit": (
            "run_qa cache hit: load_dataset(json) + map" + ("" if runqa_hit else " (MISSED its cache)"),
            "runqa-hit",
        ),
        "ours-hit": ("ours cache hit: map the examples and the features", "runqa-hit"),
        "runqa-eval": ("run_qa prepare_validation_features (same questions), no padding", "runqa-eval"),
        "ours-eval": ("ours build_eval_features (same questions)", "runqa-eval"),
    }
    body = []
    for key, (label, reference) in labels.items():
        seconds, count = rows[key]
        ref_seconds, ref_count = rows[reference]
        body.append(
            [
                label,
                number(count),
                f"{seconds:.3f}",
                number(count / seconds),
                ratio(count / seconds, ref_count / ref_seconds) + f" ({reference})",
            ]
        )
    print(f"\n### {describe_dataset(name, info, limit)}\n")
    print(table(["what", "features", "seconds", "features/s", "vs run_qa (reference)"], body))
    hit, cold = rows["ours-hit"][0], rows["ours-cold"][0]
    print(
        f"- our cache hit takes {hit:.3f}s, {cold / hit:.1f}x faster than our cold build; run_qa's takes "
        f"{rows['runqa-hit'][0]:.3f}s"
    )
    spread = []
    pairs = (("ours", "runqa"), ("ours-eval", "runqa-eval"), ("ours-hit", "runqa-hit"))
    for ours, reference in pairs:
        per_round = sorted(r / o for o, r in zip(runs[ours], runs[reference], strict=True))
        spread.append(f"{ours} {per_round[0]:.2f}-{per_round[-1]:.2f}x")
    print(f"- per-round speed ratios vs run_qa (same round, same load): {', '.join(spread)}")
    hit_share = rows["runqa-hit"][0] and hit / rows["runqa-hit"][0]
    verdict = "met" if hit_share <= 2.0 else "NOT met"
    print(
        f"- our cache hit (examples and features) takes {hit_share:.2f}x run_qa's cache hit time "
        f"(target <= 2.00x): {verdict}"
    )
    if rows["ours"][1] != rows["runqa"][1]:
        print(
            f"- window counts differ ({rows['ours'][1]:,} vs {rows['runqa'][1]:,}): ours cuts questions to "
            f"max_query_length={settings['max_query_length']} tokens first"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_dataset_arguments(parser, long_examples=600)
    parser.add_argument("--max-examples", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (median)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args()
    if args.quick:
        args.long_examples, args.repeats = 16, 1
        args.max_examples = args.max_examples or 64
    names = dataset_names(args)
    start = time.perf_counter()
    print(f"# Feature building ({machine_line()})")
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        work = Path(tmp)
        with silenced(work / "setup.log"):
            backbone = build_shared_backbone(work / "backbone", work / "tok-cache", args.seed)
        settings = {k: backbone[k] for k in ("max_seq_length", "doc_stride", "max_query_length")}
        print(
            f"Tokenizer: the tiny backbone's ({backbone['tokenizer']}, vocabulary {backbone['vocab']:,}); "
            f"max_seq_length {settings['max_seq_length']}, doc_stride {settings['doc_stride']}; "
            f"median of {args.repeats} run(s) per cell."
        )
        sets = prepare_datasets(
            work, args.long_examples if "long" in names else 0, seed=args.seed, embedded="embedded" in names
        )
        for name in names:
            bench_dataset(name, sets[name], work / "backbone", settings, args, work)
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
