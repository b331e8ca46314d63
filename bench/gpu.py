"""GPU check: this framework against HF ``Trainer`` at klue/roberta-large's shape, in fp32, bf16-mixed
and 16-mixed.

    python bench/gpu.py                      # one CUDA GPU; meant to take under 5 minutes on an H100
    python bench/gpu.py --batch-size 32 --tasks reader --precisions bf16-mixed
    python bench/gpu.py --quick              # CPU smoke run in seconds (tiny shapes): what the tests run

Not yet measured on a GPU (no GPU lent as of 2026-12-05): the numbers, the card and the date go to
docs/benchmarks.md when it is.

The model: a RoBERTa of klue/roberta-large's shape (24 layers, hidden 1024, 16 heads, FFN 4096, 514 positions,
one token type, LayerNorm eps 1e-5, vocabulary 32,000; 336 M parameters with the QA head), random weights,
built from a config with no download: composed as ``backbone=tiny_bert backbone.model_type=roberta
backbone.config.*=...``, the project's offline path, whose WordPiece tokenizer is trained on the embedded MRC
and NLI training text (about 27k tokens: the embedding keeps klue's 32,000 rows, the ids past the tokenizer's
are never looked up). Saved once (tokenizer + config, no weights); every run loads that directory.

* reader: extractive QA, ``max_seq_length`` 384, ``doc_stride`` 128, batch 16, on questions generated from the
  embedded data/mrc_sample (each context its own passage among 0..16 others: ``_common.long_examples``), so
  most windows are full 384-token windows, as KLUE-MRC's long contexts give;
* classifier: KLUE-NLI-style pair classification (3 classes), ``max_seq_length`` 128, batch 32, on
  data/nli_sample pairs whose premise is 16..24 embedded premises joined, so that pairs fill the 128 tokens.

Each (task, precision, path) runs in its own process: its own CUDA context, peak memory and accelerate state.

* ``ours``: the framework as ``main.py`` builds it: the config composed with Hydra's compose API
  (``backbone=local``; ``model=reader``, or ``model=classifier datamodule=nli_sample``), then
  ``tasks.build.build_run`` (backbone, datamodule, LightningModule, the Lightning ``Trainer`` with the
  project's callbacks and CSV logger) and ``trainer.fit``, ``trainer.precision`` 32-true | bf16-mixed |
  16-mixed. The two checkpoint writers are off: they act after the clock stops and would write 4 GB of
  weights and AdamW state per run.
* ``HF Trainer``: ``AutoModelFor*.from_config`` on the same saved config; run_qa's ``prepare_train_features``
  (``bench/_runqa.py``) for the reader, the datamodule's tokenizer call for the classifier;
  ``DataCollatorWithPadding``; ``bf16=True`` / ``fp16=True``.

The same in both: batch size, windows, shuffled batches padded to their longest row, DataLoader workers
(``--num-workers``; default the datamodule's 0) and unpinned memory (as the datamodule's loaders), AdamW
(``torch.optim.AdamW``: ``optim="adamw_torch"``, not HF's fused default; the model config's lr, betas, eps and
weight decay, none on biases and LayerNorm), linear schedule with the config's warmup ratio of all steps,
gradient clipping 1.0, logging every ``trainer.log_every_n_steps`` steps, no validation, no token type ids
(RoBERTa has one type), float32 matmuls at the default precision (no TF32), the default attention (SDPA).

Measured from the end of warm-up step ``--warmup`` to the end of the last step, the GPU synchronised at both
ends: samples/s (training features), tokens/s (non-padding tokens), padding (padded share of the batches),
peak GPU memory (``torch.cuda.max_memory_allocated`` over the run: weights, gradients, AdamW state,
activations), DataLoader wait (time in the DataLoader iterator's ``__next__`` within the window / the window:
batches not ready when the loop asks for them; with 0 workers collation is part of it), vs fp32 (samples/s
over the same path's fp32 row) and ours / HF (samples/s over the HF Trainer row of the same precision, both
measured in this run). The JSON adds the framework's own ``TrainThroughput`` rate (batch compute time only,
warm-up included) and peak reserved memory.

Budget: 12 processes (2 tasks x 3 precisions x 2 paths) of 5 + 40 steps. Estimated, not timed: each process
spends 10-15 s starting (imports, compose, features, building a 336 M-parameter model, CUDA context) and
3-20 s stepping (fp32 reader the longest): about 4 minutes on one H100. ``--worker-timeout`` (150 s) stops a
stuck run; ``--steps`` / ``--tasks`` / ``--precisions`` shorten it.

``--quick``: tiny shapes (2 layers, hidden 64, a 2,000-token vocabulary), batch 4 / 8, 1 + 2 steps, fp32 and
bf16-mixed (CPU autocast), 16-mixed skipped (it needs CUDA), every run in this one process (``--isolate``: one
process each, as the default); peak GPU memory is then "-". It checks that every path runs, not how fast.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    ROOT,
    SAMPLE,
    compose,
    emit,
    load_examples,
    long_examples,
    machine_line,
    missing,
    number,
    ratio,
    run_worker,
    silenced,
    table,
    write_squad,
)

NLI = ROOT / "data" / "nli_sample"
TASKS = ("reader", "classifier")
# row label -> Lightning's trainer.precision and HF TrainingArguments' flags
PRECISIONS: dict[str, tuple[str, dict[str, bool]]] = {
    "fp32": ("32-true", {}),
    "bf16-mixed": ("bf16-mixed", {"bf16": True}),
    "16-mixed": ("16-mixed", {"fp16": True}),
}
PATHS = {"ours": "ours", "hf": "HF Trainer"}
# klue/roberta-large's config.json, less what does not change the cost of a step
ROBERTA_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}
KLUE_VOCAB = 32000
QUICK_SHAPE = {
    **ROBERTA_LARGE,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
}
DEFAULT_OUT = ROOT / "outputs" / "bench_gpu" / "results.json"
QUICK_OUT = ROOT / "outputs" / "bench_gpu" / "results_quick.json"
MIB = 1024 * 1024


# ----------------------------------------------------------------------------- measuring


class LoaderClock:
    """Every batch a DataLoader iterator hands out in this process: when ``__next__`` started and ended,
    and the batch's (samples, real tokens, positions).

    Patched on torch's ``_BaseDataLoaderIter``, which both Lightning's fetcher and accelerate's loader shard
    call: one measure for both paths, whatever the number of workers (batches are counted in this process).
    """

    def __init__(self) -> None:
        self.fetches: list[tuple[float, float, int, int, int]] = []

    def install(self) -> LoaderClock:
        from torch.utils.data import dataloader

        base = dataloader._BaseDataLoaderIter
        original = base.__dict__["__next__"]
        clock = self

        def timed_next(iterator: Any) -> Any:
            start = time.perf_counter()
            batch = original(iterator)
            end = time.perf_counter()
            mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
            if mask is not None:
                clock.fetches.append((start, end, int(mask.shape[0]), int(mask.sum()), int(mask.numel())))
            return batch

        base.__next__ = timed_next
        return self


class StepClock:
    """End time of every optimiser step; the GPU is synchronised at the two ends of the measured window."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total
        self.times: list[float] = []

    def step_end(self) -> None:
        if len(self.times) + 1 in (self.warmup, self.total):
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the queued kernels of the steps before belong to this window
        self.times.append(time.perf_counter())

    def summary(self, loader: LoaderClock) -> dict[str, Any]:
        if len(self.times) < self.total:
            raise RuntimeError(f"only {len(self.times)} of {self.total} steps ran")
        start, end = self.times[self.warmup - 1], self.times[self.total - 1]
        seconds = end - start
        measured = loader.fetches[self.warmup : self.total]  # batch i is step i (no gradient accumulation)
        samples = sum(f[2] for f in measured)
        tokens = sum(f[3] for f in measured)
        positions = sum(f[4] for f in measured)
        waited = sum(f[1] - f[0] for f in loader.fetches if f[0] >= start and f[1] <= end)
        return {
            "steps": self.total - self.warmup,
            "seconds": seconds,
            "samples": samples,
            "tokens": tokens,
            "samples_per_s": samples / seconds,
            "tokens_per_s": tokens / seconds,
            "padding": 1 - tokens / positions,
            "loader_wait_s": waited,
            "loader_wait_share": waited / seconds,
        }


def cuda_memory() -> dict[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return {"peak_allocated_mib": None, "peak_reserved_mib": None}
    return {
        "peak_allocated_mib": torch.cuda.max_memory_allocated() / MIB,
        "peak_reserved_mib": torch.cuda.max_memory_reserved() / MIB,
    }


# ----------------------------------------------------------------------------- data and backbone


def nli_long_pairs(records: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` NLI records whose premise is their own among 15..23 other embedded premises (joined by spaces):
    an embedded premise is about 7 tokens, so nearly every pair fills ``max_seq_length`` 128, the window a
    KLUE-NLI run pads to; hypothesis and label kept."""
    rng = random.Random(seed)
    premises = sorted({r["premise"] for r in records})
    out = []
    for i in range(n):
        base = records[rng.randrange(len(records))]
        k = rng.randint(15, 23)
        others = [p for p in rng.sample(premises, k + 1) if p != base["premise"]][:k]
        others.insert(rng.randint(0, len(others)), base["premise"])
        out.append({**base, "guid": f"nli-long-{i:05d}", "premise": " ".join(others)})
    return out


def prepare_data(work: Path, examples: dict[str, int], seed: int) -> dict[str, dict[str, str]]:
    """The training files of both tasks (generated from the embedded data) and their validation files."""
    mrc = long_examples(load_examples(SAMPLE / "train.json"), examples["reader"], seed=seed, max_extra=16)
    nli = json.loads((NLI / "train.json").read_text(encoding="utf-8"))
    nli_file = work / "data" / "nli_long.json"
    nli_file.parent.mkdir(parents=True, exist_ok=True)
    nli_file.write_text(
        json.dumps(nli_long_pairs(nli, examples["classifier"], seed), ensure_ascii=False), encoding="utf-8"
    )
    return {
        "reader": {
            "train_file": str(write_squad(work / "data" / "mrc_long.json", mrc)),
            "validation_file": str(SAMPLE / "validation.json"),
        },
        "classifier": {"train_file": str(nli_file), "validation_file": str(NLI / "validation.json")},
    }


def build_backbone(work: Path, quick: bool, seed: int) -> dict[str, Any]:
    """The RoBERTa of klue/roberta-large's shape (``--quick``: a tiny one) as ``backbone=local`` reads it:
    tokenizer + config, no weights. Built by the project's offline path (``tiny_backbone``)."""
    from hydra.utils import instantiate

    shape = QUICK_SHAPE if quick else ROBERTA_LARGE
    overrides = [
        "backbone=tiny_bert",
        "backbone.model_type=roberta",
        f"backbone.train_files=[{SAMPLE / 'train.json'},{NLI / 'train.json'}]",
        f"backbone.tokenizer.vocab_size={2000 if quick else KLUE_VOCAB}",
        *(f"++backbone.config.{key}={value}" for key, value in shape.items()),
        f"paths.cache_dir={work / 'cache'}",
        f"seed={seed}",
    ]
    cfg = compose(overrides, work / "compose-backbone")
    backbone = instantiate(cfg.backbone, _convert_="all")
    vocabulary = len(backbone.tokenizer)
    if not quick:
        backbone.config.vocab_size = max(KLUE_VOCAB, vocabulary)
    directory = backbone.save(work / "backbone")
    return {
        "dir": str(directory),
        "tokenizer_vocab": vocabulary,
        "config": {key: getattr(backbone.config, key) for key in ("vocab_size", *shape)},
    }


def task_overrides(task: str) -> list[str]:
    """A task's config groups: the defaults (model=reader, datamodule=mrc_sample) or the NLI classifier."""
    return [] if task == "reader" else ["model=classifier", "datamodule=nli_sample"]


def task_settings(task: str, work: Path, backbone_dir: str, overrides: Sequence[str]) -> dict[str, Any]:
    """What the HF Trainer path copies from the composed config: batching, optimiser, schedule, clipping."""
    from omegaconf import OmegaConf

    cfg = compose(
        [*task_overrides(task), "backbone=local", f"backbone.name_or_path={backbone_dir}", *overrides],
        work / f"compose-{task}",
    )
    data = cfg.datamodule
    return {
        "batch_size": int(data.batch_size),
        "max_seq_length": int(data.max_seq_length),
        "doc_stride": int(data.get("doc_stride") or 0),
        "max_query_length": int(data.get("max_query_length") or 0),
        "num_workers": int(data.num_workers),
        "text_fields": list(data.get("text_fields") or []),
        "label_field": str(data.get("label_field") or ""),
        "optimizer": OmegaConf.to_container(cfg.model.optimizer, resolve=True),
        "scheduler": OmegaConf.to_container(cfg.model.scheduler, resolve=True),
        "clip": float(cfg.trainer.gradient_clip_val or 0.0),
        "log_every_n_steps": int(cfg.trainer.log_every_n_steps),
    }


# ----------------------------------------------------------------------------- the two paths


def run_ours(spec: dict[str, Any], loader: LoaderClock) -> dict[str, Any]:
    from lightning.pytorch import Callback

    from callbacks.throughput import TrainThroughput
    from tasks.build import build_run

    clock = StepClock(spec["warmup"], spec["steps"])
    overrides = [
        *task_overrides(spec["task"]),
        "backbone=local",
        f"backbone.name_or_path={spec['backbone']}",
        *spec["overrides"],
        f"datamodule.train_file={spec['train_file']}",
        f"datamodule.validation_file={spec['validation_file']}",
        f"datamodule.max_train_examples={spec['examples']}",
        "datamodule.max_eval_examples=8",
        f"trainer={'gpu' if spec['cuda'] else 'cpu'}",
        "trainer.devices=1",
        f"trainer.precision={PRECISIONS[spec['precision']][0]}",
        f"trainer.max_steps={spec['steps']}",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "+trainer.enable_checkpointing=false",
        "callbacks.model_checkpoint=null",
        "callbacks.last_checkpoint=null",
        f"paths.cache_dir={spec['cache_dir']}",
        f"seed={spec['seed']}",
        "print_config=false",
    ]
    cfg = compose(overrides, Path(spec["work"]))

    class StepEnd(Callback):
        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            clock.step_end()

    run = build_run(cfg)
    trainer = run["trainer"]
    # first in the list: a step ends before the other callbacks do their work of that step
    trainer.callbacks.insert(0, StepEnd())
    trainer.fit(run["model"], datamodule=run["datamodule"])
    # the project's own number: batch compute time only (no loading), every step including the warm-up ones
    own = next((c for c in trainer.callbacks if isinstance(c, TrainThroughput)), None)
    return {
        "features": len(run["datamodule"].train_features),
        "parameters": sum(p.numel() for p in run["model"].parameters()),
        **clock.summary(loader),
        "callback_samples_per_s": own.samples_per_second if own else None,
    }


def hf_train_set(spec: dict[str, Any], tokenizer: Any) -> Any:
    """The HF path's features: run_qa's for the reader, the datamodule's tokenizer call for the classifier."""
    from datasets import Dataset

    if spec["task"] == "reader":
        from bench._runqa import prepare_train_features, runqa_columns, runqa_features

        raw = Dataset.from_list(runqa_columns(load_examples(Path(spec["train_file"]), spec["examples"])))
        return runqa_features(
            raw, prepare_train_features, tokenizer, spec["max_seq_length"], spec["doc_stride"], False
        )
    records = json.loads(Path(spec["train_file"]).read_text(encoding="utf-8"))[: spec["examples"]]
    labels = {name: i for i, name in enumerate(sorted({r[spec["label_field"]] for r in records}))}
    first, second = spec["text_fields"]
    raw = Dataset.from_list(
        [{"a": r[first], "b": r[second], "labels": labels[r[spec["label_field"]]]} for r in records]
    )

    def encode(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(batch["a"], batch["b"], truncation=True, max_length=spec["max_seq_length"])

    return raw.map(encode, batched=True, remove_columns=["a", "b"])


def run_hf(spec: dict[str, Any], loader: LoaderClock) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    clock = StepClock(spec["warmup"], spec["steps"])
    tokenizer = AutoTokenizer.from_pretrained(spec["backbone"])
    train = hf_train_set(spec, tokenizer)
    config = AutoConfig.from_pretrained(spec["backbone"])
    if "token_type_ids" in train.column_names and config.type_vocab_size == 1:
        train = train.remove_columns("token_type_ids")  # as the framework: RoBERTa has one token type
    if spec["task"] == "reader":
        model_class = AutoModelForQuestionAnswering
    else:
        model_class = AutoModelForSequenceClassification
        config.num_labels = len(set(train["labels"]))

    class StepEnd(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step_end()

    torch.manual_seed(spec["seed"])
    model = model_class.from_config(config)
    opt = spec["optimizer"]
    workers = spec["num_workers"]
    args = TrainingArguments(
        output_dir=spec["work"],
        per_device_train_batch_size=spec["batch_size"],
        max_steps=spec["steps"],
        learning_rate=opt["lr"],
        weight_decay=opt["weight_decay"],
        adam_beta1=opt["betas"][0],
        adam_beta2=opt["betas"][1],
        adam_epsilon=opt["eps"],
        optim="adamw_torch",
        lr_scheduler_type="linear",
        warmup_steps=spec["lr_warmup_steps"],
        max_grad_norm=spec["clip"],
        logging_steps=spec["log_every_n_steps"],
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=not spec["cuda"],
        seed=spec["seed"],
        dataloader_num_workers=workers,
        dataloader_pin_memory=False,
        dataloader_persistent_workers=workers > 0,
        **PRECISIONS[spec["precision"]][1],
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.add_callback(StepEnd())
    trainer.train()
    parameters = sum(p.numel() for p in model.parameters())
    return {"features": len(train), "parameters": parameters, **clock.summary(loader)}


def run_one(spec: dict[str, Any], loader: LoaderClock | None = None) -> dict[str, Any]:
    """One (task, precision, path) run; ``loader``: the clock installed in this process (else one is)."""
    import torch

    loader = loader or LoaderClock().install()
    loader.fetches.clear()
    if spec["cuda"]:
        torch.cuda.reset_peak_memory_stats()
    result = run_ours(spec, loader) if spec["path"] == "ours" else run_hf(spec, loader)
    return {**result, **cuda_memory()}


def skip_reason(precision: str, path: str, cuda: bool) -> str | None:
    if precision == "16-mixed" and not cuda:
        return "skipped: needs CUDA"
    if path == "hf":
        return missing("accelerate")  # HF Trainer needs it
    return None


# ----------------------------------------------------------------------------- report


def report(task: str, heading: str, results: dict[str, dict[str, dict | str]]) -> str:
    headers = [
        "path",
        "precision",
        "steps",
        "samples/s",
        "tokens/s",
        "padding",
        "peak GPU MiB",
        "DataLoader wait",
        "vs fp32",
        "ours / HF",
    ]
    rows = []
    for precision, by_path in results.items():
        for path, result in by_path.items():
            if not isinstance(result, dict):
                text = result if result.startswith(("skipped", "not installed")) else f"failed: {result}"
                rows.append([PATHS[path], precision, text, *["-"] * 7])
                continue
            fp32 = results.get("fp32", {}).get(path)
            hf = by_path.get("hf")
            rows.append(
                [
                    PATHS[path],
                    precision,
                    result["steps"],
                    number(result["samples_per_s"], 1),
                    number(result["tokens_per_s"]),
                    f"{100 * result['padding']:.1f}%",
                    number(result["peak_allocated_mib"]),
                    f"{100 * result['loader_wait_share']:.1f}%",
                    ratio(result["samples_per_s"], fp32["samples_per_s"]) if isinstance(fp32, dict) else "-",
                    ratio(result["samples_per_s"], hf["samples_per_s"])
                    if path == "ours" and isinstance(hf, dict)
                    else "-",
                ]
            )
    return f"### {task}: {heading}\n\n" + table(headers, rows, align="ll" + "r" * 8)


def device_line() -> str:
    import torch

    if not torch.cuda.is_available():
        return "device: CPU (no CUDA)"
    props = torch.cuda.get_device_properties(0)
    return f"device: {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"


def write_outputs(out: Path, payload: dict[str, Any], markdown: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    out.with_suffix(".md").write_text(markdown + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- driver


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="CPU smoke run: tiny shapes, a few steps, one process"
    )
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help="reader, classifier or both (comma-separated)"
    )
    parser.add_argument(
        "--precisions", default=",".join(PRECISIONS), help=f"subset of {', '.join(PRECISIONS)}"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="reader batch (default 16; --quick 4)")
    parser.add_argument(
        "--cls-batch-size", type=int, default=None, help="classifier batch (default 32; --quick 8)"
    )
    parser.add_argument(
        "--max-seq-length", type=int, default=384, help="reader windows (the classifier's: 128)"
    )
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument(
        "--num-workers", type=int, default=None, help="DataLoader workers (default: the config's 0)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="steps before the clock starts (default 5)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps after --warmup (default 40)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--worker-timeout", type=float, default=150.0, help="seconds before a run is stopped")
    parser.add_argument("--in-process", action="store_true", help="every run in this process (--quick does)")
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="one process per run even with --quick (the default's plumbing)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"JSON of the results (default {DEFAULT_OUT})")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return args
    quick = args.quick
    args.batch_size = args.batch_size or (4 if quick else 16)
    args.cls_batch_size = args.cls_batch_size or (8 if quick else 32)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 5)
    args.steps = args.steps if args.steps is not None else (2 if quick else 40)
    args.in_process = (args.in_process or quick) and not args.isolate
    args.out = args.out or (QUICK_OUT if quick else DEFAULT_OUT)
    if args.warmup < 1 or args.steps < 1:
        parser.error(
            "--warmup and --steps must be >= 1 (the clock starts at the end of the last warm-up step)"
        )
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = sorted(set(args.tasks) - set(TASKS)) + sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"unknown task or precision {unknown}: tasks {TASKS}, precisions {tuple(PRECISIONS)}")
    return args


def task_config(task: str, args: argparse.Namespace) -> list[str]:
    """The command-line overrides of a task's runs (batch size, window, workers)."""
    if task == "reader":
        overrides = [
            f"datamodule.batch_size={args.batch_size}",
            f"datamodule.max_seq_length={args.max_seq_length}",
            f"datamodule.doc_stride={args.doc_stride}",
        ]
    else:
        overrides = [f"datamodule.batch_size={args.cls_batch_size}", "datamodule.max_seq_length=128"]
    if args.num_workers is not None:
        overrides.append(f"datamodule.num_workers={args.num_workers}")
    return overrides


def task_heading(task: str, settings: dict[str, Any]) -> str:
    if task == "reader":
        return (
            f"extractive QA, max_seq_length {settings['max_seq_length']}, doc_stride "
            f"{settings['doc_stride']}, batch {settings['batch_size']} (questions generated from "
            "data/mrc_sample, long contexts)"
        )
    return (
        f"NLI pair classification, max_seq_length {settings['max_seq_length']}, batch "
        f"{settings['batch_size']} (data/nli_sample pairs, premises joined to fill the window)"
    )


def measure_task(
    task: str, base: dict[str, Any], args: argparse.Namespace, loader: LoaderClock | None, start: float
) -> dict[str, dict[str, dict | str]]:
    """Every (precision, path) run of one task: in this process, or each in its own."""
    work = Path(base["work"])
    results: dict[str, dict[str, dict | str]] = {}
    for precision in args.precisions:
        results[precision] = {}
        for path in PATHS:
            name = f"{task}-{precision}-{path}"
            spec = {**base, "precision": precision, "path": path, "work": str(work / "runs" / name)}
            reason = skip_reason(precision, path, base["cuda"])
            if reason:
                results[precision][path] = reason
            elif loader is not None:
                try:
                    with silenced(work / f"{name}.log"):
                        results[precision][path] = run_one(spec, loader)
                except Exception as error:  # report it and go on with the other runs
                    results[precision][path] = f"{type(error).__name__}: {error}"
            else:
                results[precision][path] = run_worker(
                    Path(__file__), ["--worker", "--spec", json.dumps(spec)], timeout=args.worker_timeout
                )
            elapsed = time.perf_counter() - start
            print(f"  ... {name} done ({elapsed:.0f}s)", file=sys.stderr, flush=True)
    return results


NOTES = (
    "samples/s: training features per second; tokens/s: non-padding tokens per second; padding: padded share "
    "of the measured batches; peak GPU MiB: torch.cuda.max_memory_allocated over the run; DataLoader wait: "
    "time in the DataLoader iterator's __next__ / wall time of the measured steps; vs fp32: over the same "
    "path's fp32 row; ours / HF: over the HF Trainer row of the same precision, measured in this run."
)


def main() -> None:
    args = parse_args()
    if args.worker:
        emit(run_one(json.loads(args.spec)))
        return
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        sys.exit(
            "bench/gpu.py measures a CUDA GPU and found none (torch.cuda.is_available() is False). "
            "Run it on a GPU machine, or `python bench/gpu.py --quick` for the CPU smoke run."
        )
    start = time.perf_counter()
    total = args.warmup + args.steps
    lines = [f"# GPU check ({machine_line()}; {device_line()})"]
    print(lines[0], flush=True)
    payload: dict[str, Any] = {"machine": machine_line(), "device": device_line(), "quick": args.quick,
                               "warmup": args.warmup, "steps": args.steps, "results": {}}  # fmt: skip
    loader = LoaderClock().install() if args.in_process else None
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        with silenced(work / "setup.log"):
            backbone = build_backbone(work, args.quick, args.seed)
        batch = {"reader": args.batch_size, "classifier": args.cls_batch_size}
        # one epoch holds every step: a question gives at least one window, a pair one feature
        examples = {task: max(16, total * batch[task]) for task in TASKS}
        data = prepare_data(work, examples, args.seed)
        shape = backbone["config"]
        lines.append(
            f"Model: RoBERTa, {'tiny (--quick)' if args.quick else 'klue/roberta-large shape'}: "
            f"{shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, "
            f"{shape['num_attention_heads']} heads, FFN {shape['intermediate_size']}, vocabulary "
            f"{shape['vocab_size']:,} (tokenizer {backbone['tokenizer_vocab']:,}), random weights from the "
            f"config. {total} optimiser steps per run, the first {args.warmup} warm-up: rates over the last "
            f"{args.steps}."
        )
        print(lines[-1], flush=True)
        payload["model"] = shape
        for task in args.tasks:
            overrides = task_config(task, args)
            with silenced(work / "setup.log"):
                settings = task_settings(task, work, backbone["dir"], overrides)
            warmup_ratio = float(settings["scheduler"].get("warmup_ratio") or 0.0)
            base = {**settings, **data[task], "task": task, "cuda": cuda, "backbone": backbone["dir"],
                    "overrides": overrides, "examples": examples[task], "steps": total, "warmup": args.warmup,
                    "lr_warmup_steps": math.ceil(warmup_ratio * total), "seed": args.seed, "work": str(work),
                    "cache_dir": str(work / "cache")}  # fmt: skip
            results = measure_task(task, base, args, loader, start)
            lines.append(report(task, task_heading(task, settings), results))
            print("\n" + lines[-1], flush=True)
            payload["results"][task] = {"settings": settings, "runs": results}
    seconds = time.perf_counter() - start
    payload["total_seconds"] = seconds
    lines += [NOTES, f"total {seconds:.0f}s"]
    print(f"\n{NOTES}\n\ntotal {seconds:.0f}s")
    write_outputs(args.out, payload, "\n\n".join(lines))
    print(f"results: {args.out} (and {args.out.with_suffix('.md').name})")


if __name__ == "__main__":
    main()
