"""Training throughput: a raw PyTorch loop, HF ``Trainer`` (run_qa-style) and this framework, side by side.

    nice -n 19 python bench/train_throughput.py            # both data sets, every path, each in its own process
    python bench/train_throughput.py --quick               # a seconds-long smoke run (tiny data, one process)
    python bench/train_throughput.py --datasets long --steps 200

Every path trains the same model from the same initial weights: the tiny backbone of
``+experiment=mrc_curriculum`` (its tokenizer trained on the embedded training text, the ModernBERT
encoder of ``conf/backbone/tiny.yaml``), saved once as an HF model directory that each path loads. Same
tokenizer, batch size, ``max_seq_length`` / ``doc_stride``, optimiser (AdamW, the experiment's lr, betas,
weight decay without decay on biases and norms), linear schedule with the experiment's warmup ratio,
gradient clipping, fp32, and the same number of optimiser steps:

* (a) ``raw``: a plain PyTorch loop over pre-built tensors: the framework's training features in the
  framework's shuffled order (``SeededShuffleSampler``: ``randperm`` seeded with ``seed + epoch``), padded
  per batch before the clock starts. The same batches as ``ours-shuffled``, with no loader, no collate,
  no callbacks: the lower bound of any framework's overhead.
* (b) HF ``Trainer`` on run_qa's ``prepare_train_features`` (``bench/_runqa.py``, run through
  ``Dataset.map`` as run_qa does): ``hf-padmax`` is run_qa's default (``--pad_to_max_length``: every
  feature padded to ``max_seq_length``, ``default_data_collator``); ``hf-dynamic`` pads per batch
  (``DataCollatorWithPadding``, run_qa with ``--pad_to_max_length False``); ``hf-grouped`` adds
  ``train_sampling_strategy="group_by_length"`` (formerly ``group_by_length=True``).
* (c) this framework as ``main.py`` builds it: the config composed with Hydra's compose API
  (``+experiment=mrc_curriculum backbone=local ...``), then ``main.build_run`` (backbone, ``MRCDataModule``,
  ``ExtractiveReader``, the Lightning ``Trainer`` with the project's callbacks and CSV logger) and
  ``trainer.fit``. ``ours-shuffled``: ``curriculum.name=none``, ``group_by_length=false``;
  ``ours-grouped``: ``group_by_length=true`` (how ``mrc_curriculum`` batches its shuffled epochs; its
  strictly sorted first epoch is left out because a fixed number of steps from a sorted order would
  measure only the shortest contexts). Validation is off (``limit_val_batches=0``) in every path.

Measured: the wall time from the end of warm-up step ``--warmup`` to the end of the last step (steady
state: loader, collate, forward, backward, clipping, optimiser, schedule, logging and callbacks included;
model loading, feature building and the first steps not). samples/s = features trained on per second;
tokens/s = real (non-padding) tokens per second; padding = padded positions / all positions of the
measured batches. Peak RSS is the process's maximum resident set (VmHWM); "+MB" is its rise over the RSS
after the libraries were imported. Each path runs in its own process (``--quick``: all in one process, so
RSS is then shared and not reported).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    add_dataset_arguments,
    build_shared_backbone,
    chosen_paths,
    compose,
    dataset_names,
    describe_dataset,
    emit,
    load_examples,
    machine_line,
    mask_size,
    median_run,
    missing,
    number,
    prepare_datasets,
    ratio,
    run_worker,
    silenced,
    status_mb,
    table,
)

PATHS = {
    "raw": "(a) raw PyTorch loop, pre-built tensors",
    "hf-padmax": "(b) HF Trainer, run_qa default (pad to max_seq_length)",
    "hf-dynamic": "(b) HF Trainer, dynamic padding",
    "hf-grouped": "(b) HF Trainer, dynamic padding, group_by_length",
    "ours-shuffled": "(c) this framework, shuffled",
    "ours-grouped": "(c) this framework, length-grouped batches",
}
# The HF Trainer run with the same batching, for the like-for-like ratio.
SAME_BATCHING = {
    "raw": "hf-dynamic",
    "hf-padmax": "hf-padmax",
    "hf-dynamic": "hf-dynamic",
    "hf-grouped": "hf-grouped",
    "ours-shuffled": "hf-dynamic",
    "ours-grouped": "hf-grouped",
}


# ----------------------------------------------------------------------------- measuring


class Steps:
    """End time and (samples, real tokens, padded positions) of every optimiser step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.sizes: list[tuple[int, int, int]] = []

    def record(self, attention_mask: Any) -> None:
        self.times.append(time.perf_counter())
        self.sizes.append(mask_size(attention_mask))

    def summary(self, warmup: int) -> dict[str, Any]:
        if len(self.times) <= warmup:
            raise RuntimeError(f"only {len(self.times)} steps ran; need more than --warmup {warmup}")
        seconds = self.times[-1] - self.times[warmup - 1]  # from the end of the last warm-up step
        measured = self.sizes[warmup:]
        samples = sum(s for s, _, _ in measured)
        tokens = sum(t for _, t, _ in measured)
        positions = sum(p for _, _, p in measured)
        return {
            "steps": len(measured),
            "seconds": seconds,
            "samples": samples,
            "tokens": tokens,
            "samples_per_s": samples / seconds,
            "tokens_per_s": tokens / seconds,
            "padding": 1 - tokens / positions,
        }


# ----------------------------------------------------------------------------- the paths


def feature_settings(spec: dict[str, Any]) -> dict[str, int]:
    return {k: spec[k] for k in ("max_seq_length", "doc_stride", "max_query_length")}


def optimizer_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """What a hand-written loop does: no decay on biases and norm weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def run_raw(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, get_linear_schedule_with_warmup

    from datamodules.mrc_features import build_train_features

    base_rss = status_mb("VmRSS")
    tokenizer = AutoTokenizer.from_pretrained(spec["backbone"])
    examples = load_examples(Path(spec["train_file"]), spec.get("max_examples"))
    features = build_train_features(examples, tokenizer, **feature_settings(spec))
    n, batch_size, steps = len(features["input_ids"]), spec["batch_size"], spec["steps"]
    keys = ("input_ids", "attention_mask", "start_positions", "end_positions")
    batches: list[dict[str, torch.Tensor]] = []
    epoch = 0
    while len(batches) < steps:  # SeededShuffleSampler's order: randperm seeded with seed + epoch
        order = torch.randperm(n, generator=torch.Generator().manual_seed(spec["seed"] + epoch)).tolist()
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            longest = max(len(features["input_ids"][i]) for i in rows)
            batch = {}
            for key in keys:
                if key in ("input_ids", "attention_mask"):
                    fill = tokenizer.pad_token_id if key == "input_ids" else 0
                    values = [features[key][i] + [fill] * (longest - len(features[key][i])) for i in rows]
                else:
                    values = [features[key][i] for i in rows]
                batch[key] = torch.tensor(values, dtype=torch.long)
            batches.append(batch)
        epoch += 1
    batches = batches[:steps]

    torch.manual_seed(spec["seed"])
    model = AutoModelForQuestionAnswering.from_pretrained(spec["backbone"])
    model.train()
    opt = spec["optimizer"]
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, opt["weight_decay"]), lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"]
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, spec["warmup_steps"], steps)
    record = Steps()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        if spec["clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record.record(batch["attention_mask"])
    return {"features": n, "base_rss_mb": base_rss, **record.summary(spec["warmup"])}


def run_hf(spec: dict[str, Any], path: str) -> dict[str, Any]:
    import torch
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

    from bench._runqa import prepare_train_features, runqa_columns, runqa_features

    base_rss = status_mb("VmRSS")
    tokenizer = AutoTokenizer.from_pretrained(spec["backbone"])
    pad = path == "hf-padmax"
    raw = Dataset.from_list(runqa_columns(load_examples(Path(spec["train_file"]), spec.get("max_examples"))))
    train = runqa_features(
        raw, prepare_train_features, tokenizer, spec["max_seq_length"], spec["doc_stride"], pad
    )
    inner = default_data_collator if pad else DataCollatorWithPadding(tokenizer)
    record = Steps()
    masks: list[tuple[int, int, int]] = []

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = inner(features)
        masks.append(mask_size(batch["attention_mask"]))  # batches are made in step order
        return batch

    class StepEnd(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            record.times.append(time.perf_counter())

    torch.manual_seed(spec["seed"])
    model = AutoModelForQuestionAnswering.from_pretrained(spec["backbone"])
    opt = spec["optimizer"]
    args = TrainingArguments(
        output_dir=str(Path(spec["work"]) / path),
        per_device_train_batch_size=spec["batch_size"],
        max_steps=spec["steps"],
        learning_rate=opt["lr"],
        weight_decay=opt["weight_decay"],
        adam_beta1=opt["betas"][0],
        adam_beta2=opt["betas"][1],
        adam_epsilon=opt["eps"],
        lr_scheduler_type="linear",
        warmup_steps=spec["warmup_steps"],
        max_grad_norm=spec["clip"],
        train_sampling_strategy="group_by_length" if path == "hf-grouped" else "random",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=spec["seed"],
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train, data_collator=collate, processing_class=tokenizer
    )
    trainer.add_callback(StepEnd())
    trainer.train()
    record.sizes = masks[: len(record.times)]
    return {"features": len(train), "base_rss_mb": base_rss, **record.summary(spec["warmup"])}


def run_ours(spec: dict[str, Any], path: str) -> dict[str, Any]:
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar  # noqa: F401
    from lightning.pytorch.loggers import CSVLogger  # noqa: F401

    import callbacks.resume  # noqa: F401  (what build_run instantiates, imported before the baseline RSS)
    import callbacks.throughput  # noqa: F401
    import datamodules.mrc  # noqa: F401
    import models.reader  # noqa: F401
    from tasks.build import build_run

    base_rss = status_mb("VmRSS")
    work = Path(spec["work"]) / path
    overrides = [
        "+experiment=mrc_curriculum",
        "backbone=local",
        f"backbone.name_or_path={spec['backbone']}",
        f"datamodule.train_file={spec['train_file']}",
        f"datamodule.validation_file={spec['validation_file']}",
        f"datamodule.batch_size={spec['batch_size']}",
        f"datamodule.max_seq_length={spec['max_seq_length']}",
        f"datamodule.doc_stride={spec['doc_stride']}",
        f"datamodule.max_query_length={spec['max_query_length']}",
        "datamodule.curriculum.name=none",
        f"datamodule.group_by_length={str(path == 'ours-grouped').lower()}",
        "trainer=cpu",
        f"trainer.max_steps={spec['steps']}",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        f"paths.cache_dir={spec['cache_dir']}",
        f"seed={spec['seed']}",
        "print_config=false",
    ]
    if spec.get("max_examples"):
        overrides += [
            f"datamodule.max_train_examples={spec['max_examples']}",
            "datamodule.max_eval_examples=8",
        ]
    cfg = compose(overrides, work)
    record = Steps()

    class StepEnd(Callback):
        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            record.record(batch["attention_mask"])

    run = build_run(cfg)
    trainer = run["trainer"]
    # first in the list: a step ends before the other callbacks do their work of that step
    trainer.callbacks.insert(0, StepEnd())
    trainer.fit(run["model"], datamodule=run["datamodule"])
    features = len(run["datamodule"].train_features)
    return {"features": features, "base_rss_mb": base_rss, **record.summary(spec["warmup"])}


def run_path(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    if path == "raw":
        result = run_raw(spec)
    elif path.startswith("hf-"):
        result = run_hf(spec, path)
    else:
        result = run_ours(spec, path)
    result["peak_rss_mb"] = status_mb("VmHWM")
    return result


# ----------------------------------------------------------------------------- driver


def report(name: str, results: dict[str, dict | str], isolated: bool) -> None:
    headers = [
        "path",
        "features",
        "steps",
        "samples/s",
        "tokens/s",
        "padding",
        "peak RSS MB",
        "+MB",
        "vs raw (a)",
        "vs HF same batching (b)",
    ]
    rows = []
    for path, result in results.items():
        if not isinstance(result, dict):
            rows.append([PATHS[path], *["-"] * 9])
            rows[-1][-1] = result if result.startswith("not installed") else f"failed: {result}"
            continue
        raw = results.get("raw")
        hf = results.get(SAME_BATCHING[path])
        rss = isolated and result.get("peak_rss_mb")
        rows.append(
            [
                PATHS[path],
                number(result["features"]),
                result["steps"],
                number(result["samples_per_s"], 1),
                number(result["tokens_per_s"]),
                f"{100 * result['padding']:.1f}%",
                number(result["peak_rss_mb"]) if rss else "-",
                number(result["peak_rss_mb"] - result["base_rss_mb"]) if rss else "-",
                ratio(result["samples_per_s"], raw["samples_per_s"]) if isinstance(raw, dict) else "-",
                f"{ratio(result['samples_per_s'], hf['samples_per_s'])} ({SAME_BATCHING[path]})"
                if isinstance(hf, dict)
                else "-",
            ]
        )
    print(f"\n### {name}\n")
    print(table(headers, rows))
    print(targets(results))


def targets(results: dict[str, dict | str]) -> str:
    """The issue's targets: >= 0.95x the raw loop (same batches) and >= 1.0x HF Trainer (same batching)."""
    ok = {k: v for k, v in results.items() if isinstance(v, dict)}
    lines = []
    checks = [
        ("ours-shuffled", "raw", 0.95, "same batches as the raw loop"),
        ("ours-shuffled", "hf-dynamic", 1.0, "both shuffled, dynamic padding"),
        ("ours-grouped", "hf-grouped", 1.0, "both length-grouped"),
        ("ours-shuffled", "hf-padmax", 1.0, "vs run_qa's default padding"),
    ]
    for ours, ref, target, what in checks:
        if ours in ok and ref in ok:
            value = ok[ours]["samples_per_s"] / ok[ref]["samples_per_s"]
            verdict = "met" if value >= target else "NOT met"
            lines.append(f"- {ours} / {ref} = {value:.2f}x (target >= {target:.2f}x, {what}): {verdict}")
    if "raw" in ok and "ours-shuffled" in ok:
        same = (
            ok["raw"]["tokens"] == ok["ours-shuffled"]["tokens"]
            and ok["raw"]["samples"] == ok["ours-shuffled"]["samples"]
        )
        lines.append(f"- raw and ours-shuffled trained on identical batches: {'yes' if same else 'NO'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=50, help="measured optimiser steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the clock starts (>= 1)")
    add_dataset_arguments(parser, long_examples=300)
    parser.add_argument(
        "--paths", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)}"
    )
    parser.add_argument(
        "--max-examples", type=int, default=None, help="use only the first N training questions"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: the experiment's (16)")
    parser.add_argument("--max-seq-length", type=int, default=None, help="default: the datamodule's (256)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per path, interleaved; the median is shown"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--in-process", action="store_true", help="run every path in this process (no RSS)")
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke run: tiny data, 3 steps, one process"
    )
    parser.add_argument("--worker", choices=list(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit(run_path(args.worker, json.loads(args.spec)))
        return
    if args.quick:
        args.steps, args.warmup, args.long_examples, args.repeats = 2, 1, 16, 1
        args.max_examples = args.max_examples or 32
        args.in_process = True
    if args.warmup < 1 or args.steps < 1:
        parser.error(
            "--warmup and --steps must be >= 1 (the clock starts at the end of the last warm-up step)"
        )
    paths = chosen_paths(parser, args.paths, PATHS)
    names = dataset_names(args)

    start = time.perf_counter()
    print(f"# Training throughput ({machine_line()})")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        overrides = []
        if args.batch_size:
            overrides.append(f"datamodule.batch_size={args.batch_size}")
        if args.max_seq_length:
            overrides.append(f"datamodule.max_seq_length={args.max_seq_length}")
        with silenced(work / "setup.log"):
            backbone = build_shared_backbone(work / "backbone", work / "cache", args.seed, overrides)
        sets = prepare_datasets(
            work, args.long_examples if "long" in names else 0, seed=args.seed, embedded="embedded" in names
        )
        total = args.warmup + args.steps
        print(
            f"Model: {backbone['model']} ({backbone['parameters'] / 1e6:.2f} M parameters, {backbone['tokenizer']} "
            f"vocabulary {backbone['vocab']:,}, attention {backbone['attention']}), same initial weights in every path. "
            f"batch {backbone['batch_size']}, max_seq_length {backbone['max_seq_length']}, doc_stride "
            f"{backbone['doc_stride']}, fp32, AdamW lr {backbone['optimizer']['lr']}, {total} optimiser steps of "
            f"which the first {args.warmup} are warm-up: rates are steady-state over the last {args.steps}"
            + (f"; median of {args.repeats} interleaved runs per path." if args.repeats > 1 else ".")
        )
        for name in names:
            info = sets[name]
            spec = {
                "backbone": str(work / "backbone"),
                "train_file": str(info["train_file"]),
                "validation_file": str(info["validation_file"]),
                "batch_size": backbone["batch_size"],
                "max_seq_length": backbone["max_seq_length"],
                "doc_stride": backbone["doc_stride"],
                "max_query_length": backbone["max_query_length"],
                "optimizer": backbone["optimizer"],
                "warmup_steps": math.ceil(float(backbone["scheduler"].get("warmup_ratio") or 0.0) * total),
                "clip": backbone["gradient_clip_val"],
                "steps": total,
                "warmup": args.warmup,
                "seed": args.seed,
                "max_examples": args.max_examples,
                "work": str(work / "runs" / name),
                "cache_dir": str(work / "cache"),
            }
            runs: dict[str, list[dict | str]] = {path: [] for path in paths}
            for repeat in range(args.repeats):  # interleaved, so slow spells of a busy machine hit every path
                for path in paths:
                    absent = missing("accelerate") if path.startswith("hf-") else None  # HF Trainer needs it
                    if absent:
                        runs[path].append(absent)
                    elif args.in_process:
                        try:
                            with silenced(work / f"{name}-{path}.log"):
                                runs[path].append(run_path(path, spec))
                        except Exception as error:  # report and go on with the other paths
                            runs[path].append(f"{type(error).__name__}: {error}")
                    else:
                        runs[path].append(
                            run_worker(Path(__file__), ["--worker", path, "--spec", json.dumps(spec)])
                        )
                    print(
                        f"  ... {name}: {path} done ({repeat + 1}/{args.repeats})",
                        file=sys.stderr,
                        flush=True,
                    )
            results = {path: median_run(found, "samples_per_s") for path, found in runs.items()}
            report(describe_dataset(name, info, args.max_examples), results, isolated=not args.in_process)
    print(
        "\nsamples/s: training features per second; tokens/s: non-padding tokens per second; padding: padded "
        "share of the measured batches' positions; vs raw (a) / vs HF (b): samples/s ratios measured in this "
        "run (the HF Trainer row with the same batching is named)."
    )
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
