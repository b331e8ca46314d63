"""Inference throughput: ``task=validate`` / ``task=predict`` against HF ``Trainer.predict``, same features
and weights.

    nice -n 19 python bench/inference.py            # embedded validation set + generated long set, every path
    python bench/inference.py --quick               # a seconds-long smoke run (tiny data, one process)
    nice -n 19 python bench/inference.py --repeats 3 --datasets long

Every path reads the same questions with the same reader weights: the tiny backbone of
``+experiment=mrc_curriculum`` (its tokenizer trained on the embedded training text, the ModernBERT encoder
of ``conf/backbone/tiny.yaml``) with one set of seeded random weights, saved once as an HF model directory;
our paths load it as ``backbone=local`` plus a Lightning checkpoint of those same weights (``ckpt_path``).
Same ``max_seq_length`` / ``doc_stride``, fp32, CPU.

* (a) HF ``Trainer.predict`` on run_qa's ``prepare_validation_features`` (``bench/_runqa.py``, through
  ``Dataset.map`` as run_qa runs it). ``hf-runqa``: run_qa's evaluation defaults
  (``per_device_eval_batch_size`` 8, ``--pad_to_max_length``: every window padded to ``max_seq_length``,
  ``default_data_collator``); ``hf-padmax``: the same with our evaluation batch size; ``hf-dynamic``: our
  evaluation batch size and per-batch padding (``DataCollatorWithPadding``, run_qa with
  ``--pad_to_max_length False``), the like-for-like reference. The Trainer keeps every window's start and
  end logits (padded with -100) for ``utils_qa.postprocess_qa_predictions``.
* (b) this framework as ``main.py`` runs it: the config composed with Hydra's compose API (``task=validate``
  or ``task=predict``, ``ckpt_path=...``), then ``tasks.runner.run_task``: ``build_run`` (backbone,
  ``MRCDataModule``, ``ExtractiveReader``, the Lightning ``Trainer`` with the project's callbacks),
  ``Trainer.validate`` / ``Trainer.predict`` over the datamodule's val / predict loader
  (``datamodule.eval_batch_size``, null: twice ``batch_size``; windows longest first, padded per batch),
  with ``torch.inference_mode`` and the per-step context-masked top-k span candidates, then decoding and the
  files. ``ours-predict`` reads the same questions as ``datamodule.test_file``; both must write the same
  predictions (the script says whether they did).

Measured: the model loop in steady state, from the moment each loop's first batch is ready to the end of its
last (loader, collate, forward and collecting the outputs: HF's logits, our span candidates; every batch
counts, so an order that puts the longest windows first gains nothing from where the clock starts), and the
same clock to the end of span decoding ("+ decode": HF's ``postprocess_qa_predictions``, ``bench/_utils_qa.py``;
ours the reader's epoch end, ``decode_predictions``), over rounds 2..``--rounds`` (the first warms up; each
round is a fresh ``Trainer.predict`` / task call). features/s = windows per second; questions/s = the same in
questions (features/s x questions / features of the set); padding = padded share of the measured positions.
"call s" is one whole call, as the last round timed it: HF loads the tokenizer, maps the features, loads the
model, runs ``Trainer.predict`` and ``postprocess_qa_predictions``; ours runs ``run_task`` (backbone,
checkpoint, features from the feature cache as after ``task=fit``, the loop, decoding, metrics and the
prediction files). Peak RSS is the process's maximum resident set (VmHWM), "+MB" its rise over the RSS after
the libraries were imported; each path runs in its own process (``--quick``: all in one process, so RSS is
not reported). The "command" line (not with ``--quick``) times ``python main.py task=validate ...`` as a user
runs it, start to exit. The ratio columns give "loop / with decoding".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch import Callback  # noqa: E402

from bench._common import (  # noqa: E402
    ROOT,
    SAMPLE,
    add_dataset_arguments,
    build_shared_backbone,
    chosen_paths,
    compose,
    dataset_names,
    emit,
    load_examples,
    long_examples,
    machine_line,
    mask_size,
    median_run,
    missing,
    number,
    ratio,
    run_worker,
    silenced,
    status_mb,
    table,
    write_squad,
)

PATHS = {
    "hf-runqa": "(a) HF Trainer.predict, run_qa eval defaults (pad to max_seq_length)",
    "hf-padmax": "(a) HF Trainer.predict, our eval batch, pad to max_seq_length",
    "hf-dynamic": "(a) HF Trainer.predict, our eval batch, dynamic padding",
    "ours-validate": "(b) this framework, task=validate",
    "ours-predict": "(b) this framework, task=predict",
}
RUNQA_EVAL_BATCH = 8  # run_qa's per_device_eval_batch_size default (TrainingArguments)
# ours / HF rows the target (>= 1.0x) is checked on, and what each comparison means
CHECKS = (
    ("hf-runqa", "vs run_qa's evaluation defaults"),
    ("hf-dynamic", "same eval batch size, both padded per batch"),
)


# ----------------------------------------------------------------------------- measuring


class BatchTimes(Callback):
    """When the first batch is ready, and the end time and (features, real tokens, positions) of every
    validation / prediction batch, written to ``path`` when the loop ends: the bench adds it to the project's
    callbacks (``+callbacks.bench_batches``)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.start = 0.0
        self.times: list[float] = []
        self.sizes: list[tuple[int, int, int]] = []

    def begin(self, batch_idx: int) -> None:
        if batch_idx == 0:  # the first batch is ready: the loop's clock starts
            self.start = time.perf_counter()

    def record(self, batch: Any) -> None:
        self.times.append(time.perf_counter())
        self.sizes.append(mask_size(batch["attention_mask"]))

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.begin(batch_idx)

    def on_predict_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.begin(batch_idx)

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.record(batch)

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.record(batch)

    def write(self) -> None:
        """Called at ``on_*_end``, after the model's epoch end decoded the spans: the round's ``done``."""
        found = {"start": self.start, "times": self.times, "sizes": self.sizes, "done": time.perf_counter()}
        self.path.write_text(json.dumps(found), encoding="utf-8")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self.write()

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self.write()


def steady_state(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates over rounds 2.. (the first warms up), each from the moment its first batch is ready to the end
    of its last (``seconds``) or to the end of span decoding (``decoded_seconds``): every batch counts, so an
    order that puts the longest first is neither helped nor hurt."""
    measured = rounds[1:]
    seconds, decoded, samples, tokens, positions, batches = 0.0, 0.0, 0, 0, 0, 0
    for found in measured:
        seconds += found["times"][-1] - found["start"]
        decoded += found["done"] - found["start"]
        batches += len(found["sizes"])
        samples += sum(s for s, _, _ in found["sizes"])
        tokens += sum(t for _, t, _ in found["sizes"])
        positions += sum(p for _, _, p in found["sizes"])
    return {
        "rounds": len(measured),
        "batches": batches,
        "seconds": seconds,
        "decoded_seconds": decoded,
        "features_per_s": samples / seconds,
        "decoded_features_per_s": samples / decoded,
        "tokens_per_s": tokens / seconds,
        "padding": 1 - tokens / positions,
    }


# ----------------------------------------------------------------------------- the paths


def run_hf(spec: dict[str, Any], path: str) -> dict[str, Any]:
    import torch  # noqa: F401
    from datasets import disable_progress_bars
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer  # noqa: F401

    from bench._utils_qa import postprocess_qa_predictions  # noqa: F401

    disable_progress_bars()
    base_rss = status_mb("VmRSS")
    batch_size = RUNQA_EVAL_BATCH if path == "hf-runqa" else spec["eval_batch_size"]
    examples = load_examples(Path(spec["eval_file"]), spec.get("max_examples"))
    rounds, call_s, features = [], 0.0, 0
    for _ in range(spec["rounds"]):
        began = time.perf_counter()
        found, features = hf_round(spec, path, examples, batch_size)
        call_s = time.perf_counter() - began
        rounds.append(found)
    predictions_file = Path(spec["work"]) / path / "predictions.json"
    predictions_file.parent.mkdir(parents=True, exist_ok=True)
    predictions_file.write_text(json.dumps(rounds[-1].pop("predictions"), ensure_ascii=False), encoding="utf-8")
    return {
        "predictions_file": str(predictions_file),
        "features": features,
        "questions": len(examples),
        "batch_size": batch_size,
        "call_s": call_s,
        "base_rss_mb": base_rss,
        **steady_state(rounds),
    }


def hf_round(
    spec: dict[str, Any], path: str, examples: list[dict[str, Any]], batch_size: int
) -> tuple[dict[str, Any], int]:
    """One run_qa-style prediction from scratch: tokenizer, features, model, ``Trainer.predict``, decoding.

    Returns the loop's batch record (first batch ready, end of every step, sizes) and the feature count.
    """
    from datasets import Dataset
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from bench._runqa import prepare_validation_features, runqa_columns, runqa_features
    from bench._utils_qa import postprocess_qa_predictions

    pad = path != "hf-dynamic"
    tokenizer = AutoTokenizer.from_pretrained(spec["backbone"])
    raw = Dataset.from_list(runqa_columns(examples))
    features = runqa_features(
        raw, prepare_validation_features, tokenizer, spec["max_seq_length"], spec["doc_stride"], pad
    )
    inner = default_data_collator if pad else DataCollatorWithPadding(tokenizer)
    found: dict[str, Any] = {"start": 0.0, "times": [], "sizes": []}

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = inner(rows)
        found["sizes"].append(mask_size(batch["attention_mask"]))  # batches are made in step order
        found["start"] = found["start"] or time.perf_counter()  # the first batch is ready
        return batch

    class StepEnd(TrainerCallback):
        def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            found["times"].append(time.perf_counter())

    model = AutoModelForQuestionAnswering.from_pretrained(spec["backbone"])
    args = TrainingArguments(
        output_dir=str(Path(spec["work"]) / path),
        per_device_eval_batch_size=batch_size,
        report_to="none",
        use_cpu=True,
        seed=spec["seed"],
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, data_collator=collate, processing_class=tokenizer)
    trainer.add_callback(StepEnd())
    output = trainer.predict(features)
    # what run_qa's QuestionAnsweringTrainer does next (its post_processing_function)
    predictions, _ = postprocess_qa_predictions(raw, features, output.predictions[:2])
    found["done"] = time.perf_counter()
    found["sizes"] = found["sizes"][: len(found["times"])]
    found["predictions"] = predictions
    return found, len(features)


def ours_overrides(spec: dict[str, Any], task: str) -> list[str]:
    """``python main.py`` overrides of a task=validate / predict run on the bench's questions."""
    split = "validation_file" if task == "validate" else "test_file"
    overrides = [
        "+experiment=mrc_curriculum",
        f"task={task}",
        f"ckpt_path={spec['ckpt']}",
        "backbone=local",
        f"backbone.name_or_path={spec['backbone']}",
        f"datamodule.{split}={spec['eval_file']}",
        f"datamodule.max_seq_length={spec['max_seq_length']}",
        f"datamodule.doc_stride={spec['doc_stride']}",
        f"datamodule.max_query_length={spec['max_query_length']}",
        "trainer=cpu",
        f"paths.cache_dir={spec['cache_dir']}",
        f"seed={spec['seed']}",
        "print_config=false",
    ]
    if spec.get("eval_batch_size_override"):
        overrides.append(f"datamodule.eval_batch_size={spec['eval_batch_size_override']}")
    if spec.get("max_examples"):
        overrides.append(f"datamodule.max_eval_examples={spec['max_examples']}")
    return overrides


def run_ours(spec: dict[str, Any], path: str) -> dict[str, Any]:
    from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar  # noqa: F401
    from lightning.pytorch.loggers import CSVLogger  # noqa: F401

    import callbacks.resume  # noqa: F401  (what build_run instantiates, imported before the baseline RSS)
    import callbacks.throughput  # noqa: F401
    import datamodules.mrc  # noqa: F401
    import models.reader  # noqa: F401
    from tasks.runner import run_task

    base_rss = status_mb("VmRSS")
    task = path.removeprefix("ours-")
    rounds, call_s = [], 0.0
    work = Path(spec["work"]) / path
    for index in range(spec["rounds"]):
        times_file = work / f"batches-{index}.json"
        run_dir = work / f"run-{index}"
        overrides = [
            *ours_overrides(spec, task),
            "+callbacks.bench_batches._target_=bench.inference.BatchTimes",
            f"+callbacks.bench_batches.path={times_file}",
        ]
        cfg = compose(overrides, run_dir)
        began = time.perf_counter()
        run_task(cfg)
        call_s = time.perf_counter() - began
        rounds.append(json.loads(times_file.read_text(encoding="utf-8")))
    predictions = json.loads(
        (work / f"run-{spec['rounds'] - 1}" / "predictions.json").read_text(encoding="utf-8")
    )
    return {
        "features": sum(s for s, _, _ in rounds[-1]["sizes"]),
        "questions": len(predictions),
        "batch_size": max(s for s, _, _ in rounds[-1]["sizes"]),
        "call_s": call_s,
        "base_rss_mb": base_rss,
        "predictions_file": str(work / f"run-{spec['rounds'] - 1}" / "predictions.json"),
        **steady_state(rounds),
    }


def run_path(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    result = run_hf(spec, path) if path.startswith("hf-") else run_ours(spec, path)
    result["peak_rss_mb"] = status_mb("VmHWM")
    return result


# ----------------------------------------------------------------------------- set-up


def make_checkpoint(spec: dict[str, Any], work: Path) -> Path:
    """A Lightning checkpoint of the shared weights, written by the framework itself (``task=validate``'s run,
    one batch, then ``Trainer.save_checkpoint``): ``ckpt_path`` of our rows."""
    from tasks.build import build_run

    run_dir = work / "checkpoint-run"
    cfg = compose(
        [*ours_overrides({**spec, "ckpt": "null"}, "validate"), "trainer.limit_val_batches=1", "logger=none"],
        run_dir,
    )
    run = build_run(cfg)
    run["trainer"].validate(run["model"], datamodule=run["datamodule"], verbose=False)
    path = run_dir / "checkpoints" / "shared.ckpt"
    run["trainer"].save_checkpoint(path, weights_only=True)
    return path


def command_seconds(spec: dict[str, Any], work: Path) -> float | str:
    """``python main.py task=validate ...`` as a user runs it (features from the cache the rounds wrote)."""
    run_dir = work / "command"
    command = [
        sys.executable,
        str(ROOT / "main.py"),
        *ours_overrides(spec, "validate"),
        f"hydra.run.dir={run_dir}",
    ]
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return f"exit {done.returncode}: {tail[-1] if tail else 'no output'}"
    return time.perf_counter() - began


def eval_sets(work: Path, long_n: int, names: list[str], seed: int) -> dict[str, Path]:
    """``{name: SQuAD file}``: the embedded validation set, and ``long_n`` long-context questions from it."""
    sets: dict[str, Path] = {}
    if "embedded" in names:
        sets["embedded"] = SAMPLE / "validation.json"
    if "long" in names:
        validation = load_examples(SAMPLE / "validation.json")
        sets["long"] = write_squad(
            work / "long" / "validation.json", long_examples(validation, long_n, seed=seed)
        )
    return sets


def describe(name: str, path: Path, limit: int | None) -> str:
    examples = load_examples(path, limit)
    lengths = sorted(len(ex["context"]) for ex in examples)
    what = (
        "embedded data/mrc_sample validation" if name == "embedded" else "generated from it (passages joined)"
    )
    return (
        f"{name}: {len(examples):,} questions, {what}; context characters min {lengths[0]:,} / median "
        f"{lengths[len(lengths) // 2]:,} / max {lengths[-1]:,}"
    )


# ----------------------------------------------------------------------------- driver


def report(name: str, results: dict[str, dict | str], isolated: bool, command: float | str | None) -> None:
    headers = [
        "path",
        "batch",
        "features",
        "questions",
        "padding",
        "features/s",
        "questions/s",
        "features/s + decode",
        "questions/s + decode",
        "call s",
        "peak RSS MB",
        "+MB",
        "vs HF run_qa",
        "vs HF same batch",
    ]
    rows = []
    for path, result in results.items():
        if not isinstance(result, dict):
            rows.append([PATHS[path], *["-"] * (len(headers) - 1)])
            rows[-1][-1] = result if result.startswith("not installed") else f"failed: {result}"
            continue
        runqa, same = results.get("hf-runqa"), results.get("hf-dynamic")
        rss = isolated and result.get("peak_rss_mb")
        per_question = result["questions"] / result["features"]


        rows.append(
            [
                PATHS[path],
                result["batch_size"],
                number(result["features"]),
                number(result["questions"]),
                f"{100 * result['padding']:.1f}%",
                number(result["features_per_s"], 1),
                number(result["features_per_s"] * per_question, 1),
                number(result["decoded_features_per_s"], 1),
                number(result["decoded_features_per_s"] * per_question, 1),
                number(result["call_s"], 2),
                number(result["peak_rss_mb"]) if rss else "-",
                number(result["peak_rss_mb"] - result["base_rss_mb"]) if rss else "-",
                versus(result, runqa),
                versus(result, same),
            ]
        )
    print(f"\n### {name}\n")
    print(table(headers, rows))
    print(targets(results))
    if command is not None:
        shown = f"{command:.1f}s" if isinstance(command, float) else f"failed: {command}"
        print(f"- command: `python main.py task=validate ...` on this set, process start to exit: {shown}")


def versus(result: dict[str, Any], reference: Any) -> str:
    """``loop ratio / ratio with decoding`` of ``result`` to ``reference`` (features/s)."""
    if not isinstance(reference, dict):
        return "-"
    loop = ratio(result["features_per_s"], reference["features_per_s"])
    return f"{loop} / {ratio(result['decoded_features_per_s'], reference['decoded_features_per_s'])}"


def read_predictions(result: dict[str, Any]) -> dict[str, str]:
    return json.loads(Path(result["predictions_file"]).read_text(encoding="utf-8"))


def targets(results: dict[str, dict | str]) -> str:
    """The issue's target: ours >= 1.0x HF ``Trainer.predict`` (features/s, decoding excluded and included),
    the two tasks agree, and how many answers equal HF's."""
    ok = {k: v for k, v in results.items() if isinstance(v, dict)}
    lines = []
    for ours in ("ours-validate", "ours-predict"):
        for reference, what in CHECKS:
            if ours in ok and reference in ok:
                loop = ok[ours]["features_per_s"] / ok[reference]["features_per_s"]
                decoded = ok[ours]["decoded_features_per_s"] / ok[reference]["decoded_features_per_s"]
                verdict = "met" if min(loop, decoded) >= 1.0 else "NOT met"
                lines.append(
                    f"- {ours} / {reference} = {loop:.2f}x, {decoded:.2f}x with decoding "
                    f"(target >= 1.00x, {what}): {verdict}"
                )
    if "ours-validate" in ok and "ours-predict" in ok:
        validated, predicted = (read_predictions(ok[path]) for path in ("ours-validate", "ours-predict"))
        same = "yes" if validated == predicted else "NO"
        lines.append(f"- task=validate and task=predict wrote identical predictions: {same}")
        for reference in ("hf-runqa", "hf-dynamic"):
            if reference in ok:
                theirs = read_predictions(ok[reference])
                equal = sum(theirs.get(key) == value for key, value in validated.items())
                lines.append(
                    f"- task=validate answers equal to {reference}'s: {equal}/{len(theirs)} (same weights; ours cuts "
                    "questions to max_query_length first, so a long question's windows can differ)"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_dataset_arguments(parser, long_examples=200)
    parser.add_argument(
        "--paths", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)}"
    )
    parser.add_argument("--max-examples", type=int, default=None, help="use only the first N questions")
    parser.add_argument(
        "--eval-batch-size",
        type=int,
        default=None,
        help="default: the datamodule's datamodule.eval_batch_size",
    )
    parser.add_argument("--rounds", type=int, default=3, help="loops per process; the first warms up (>= 2)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="processes per path, interleaved; the median is shown"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--in-process", action="store_true", help="run every path in this process (no RSS)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: tiny data, one process")
    parser.add_argument("--worker", choices=list(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit(run_path(args.worker, json.loads(args.spec)))
        return
    from datamodules.mrc import resolve_eval_batch_size

    if args.quick:
        args.long_examples, args.rounds, args.repeats = 8, 2, 1
        args.max_examples = args.max_examples or 24
        args.eval_batch_size = args.eval_batch_size or 8
        args.in_process = True
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (the first round warms up)")
    paths = chosen_paths(parser, args.paths, PATHS)
    names = dataset_names(args)

    start = time.perf_counter()
    print(f"# Inference throughput ({machine_line()})")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        work = Path(tmp)
        overrides = [f"datamodule.eval_batch_size={args.eval_batch_size}"] if args.eval_batch_size else []
        with silenced(work / "setup.log"):
            backbone = build_shared_backbone(work / "backbone", work / "cache", args.seed, overrides)
            cfg = compose(["+experiment=mrc_curriculum", *overrides], work / "compose-eval")
            eval_batch_size = resolve_eval_batch_size(cfg.datamodule.eval_batch_size, cfg.datamodule.batch_size)
        sets = eval_sets(work, args.long_examples, names, args.seed)
        print(
            f"Model: {backbone['model']} ({backbone['parameters'] / 1e6:.2f} M parameters, "
            f"{backbone['tokenizer']} vocabulary {backbone['vocab']:,}, attention {backbone['attention']}), "
            f"the same weights in every path. max_seq_length {backbone['max_seq_length']}, doc_stride "
            f"{backbone['doc_stride']}, fp32; our eval batch {eval_batch_size} (datamodule.eval_batch_size; "
            f"training batch {backbone['batch_size']}), run_qa's {RUNQA_EVAL_BATCH}. {args.rounds} loops per "
            "process, the first a warm-up"
            + (f"; median of {args.repeats} interleaved processes per path." if args.repeats > 1 else ".")
        )
        for name in names:
            spec = {
                "backbone": str(work / "backbone"),
                "eval_file": str(sets[name]),
                "eval_batch_size": eval_batch_size,
                "eval_batch_size_override": args.eval_batch_size,
                "max_seq_length": backbone["max_seq_length"],
                "doc_stride": backbone["doc_stride"],
                "max_query_length": backbone["max_query_length"],
                "rounds": args.rounds,
                "seed": args.seed,
                "max_examples": args.max_examples,
                "work": str(work / "runs" / name),
                "cache_dir": str(work / "cache"),
            }
            with silenced(work / f"{name}-checkpoint.log"):
                spec["ckpt"] = str(make_checkpoint(spec, work / "runs" / name))
            runs: dict[str, list[dict | str]] = {path: [] for path in paths}
            for repeat in range(args.repeats):  # interleaved, so slow spells of a busy machine hit every path
                for path in paths:
                    absent = missing("accelerate") if path.startswith("hf-") else None  # HF Trainer needs it
                    if absent:
                        runs[path].append(absent)
                    elif args.in_process:
                        try:
                            with silenced(work / f"{name}-{path}.log"):
                                runs[path].append(
                                    run_path(path, {**spec, "work": f"{spec['work']}/{repeat}"})
                                )
                        except Exception as error:  # report and go on with the other paths
                            runs[path].append(f"{type(error).__name__}: {error}")
                    else:
                        worker_spec = {**spec, "work": f"{spec['work']}/{repeat}"}
                        runs[path].append(
                            run_worker(Path(__file__), ["--worker", path, "--spec", json.dumps(worker_spec)])
                        )
                    print(
                        f"  ... {name}: {path} done ({repeat + 1}/{args.repeats})",
                        file=sys.stderr,
                        flush=True,
                    )
            results = {path: median_run(found, "features_per_s") for path, found in runs.items()}
            command = None if args.quick else command_seconds(spec, work / "runs" / name)
            report(describe(name, sets[name], args.max_examples), results, not args.in_process, command)
    print(
        "\nfeatures/s: evaluation windows per second through the model loop (loader, collate, forward, "
        "collecting logits or span candidates), steady state; questions/s: the same in whole questions; "
        "call s: one whole Trainer.predict + postprocess (HF) or task call (ours); vs HF: features/s ratios "
        "measured in this run."
    )
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
