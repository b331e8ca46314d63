"""What the bench scripts share: data (embedded and generated), the shared tiny backbone, Hydra composition,
worker processes, peak RSS and markdown tables.

Not a benchmark itself; ``bench/*.py`` import it (the repository root is put on ``sys.path`` first).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "data" / "mrc_sample"
RESULT_MARK = "BENCH-RESULT "


# ----------------------------------------------------------------------------- memory


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MB.

    Not ``ru_maxrss``: Linux carries it over from the parent through fork + exec, so a worker would
    report its driver's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ----------------------------------------------------------------------------- data


def load_examples(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The file's MRC records as plain dicts (the first ``limit`` of them when given)."""
    from datamodules.mrc_formats import load_mrc_examples

    examples = [dict(ex) for ex in load_mrc_examples(path)]
    return examples[:limit] if limit else examples


def long_examples(
    examples: Sequence[dict[str, Any]], n: int, seed: int = 0, max_extra: int = 8
) -> list[dict[str, Any]]:
    """``n`` questions whose context is their own passage among 0..``max_extra`` other passages.

    Context lengths then vary from one embedded passage (~150 characters) to ~10 of them (several
    thousand characters, many doc-stride windows); the answer keeps its text, its offset moves.
    """
    rng = random.Random(seed)
    contexts = sorted({ex["context"] for ex in examples})
    out = []
    for i in range(n):
        base = examples[rng.randrange(len(examples))]
        others = [c for c in rng.sample(contexts, min(max_extra + 1, len(contexts))) if c != base["context"]]
        others = others[: rng.randint(0, max_extra)]
        position = rng.randint(0, len(others))
        before = others[:position]
        shift = sum(len(c) + 1 for c in before)
        context = "\n".join([*before, base["context"], *others[position:]])
        answers = [{"text": a["text"], "answer_start": a["answer_start"] + shift} for a in base["answers"]]
        for answer in answers:
            start = answer["answer_start"]
            assert context[start : start + len(answer["text"])] == answer["text"]
        out.append(
            {**base, "id": f"long-{i:05d}", "context": context, "answers": answers, "document_id": None}
        )
    return out


def write_squad(path: Path, examples: Sequence[dict[str, Any]]) -> Path:
    from datamodules.mrc_formats import to_squad_json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_squad_json(examples), ensure_ascii=False), encoding="utf-8")
    return path


def prepare_datasets(
    work: Path, long_n: int, seed: int = 0, embedded: bool = True
) -> dict[str, dict[str, Any]]:
    """``{name: {train_file, validation_file, examples}}``: the embedded set and the generated long set."""
    train = load_examples(SAMPLE / "train.json")
    validation = load_examples(SAMPLE / "validation.json")
    sets: dict[str, dict[str, Any]] = {}
    if embedded:
        sets["embedded"] = {
            "train_file": SAMPLE / "train.json",
            "validation_file": SAMPLE / "validation.json",
            "examples": len(train),
        }
    if long_n:
        long_train = long_examples(train, long_n, seed=seed)
        long_validation = long_examples(validation, max(long_n // 10, 8), seed=seed + 1)
        sets["long"] = {
            "train_file": write_squad(work / "long" / "train.json", long_train),
            "validation_file": write_squad(work / "long" / "validation.json", long_validation),
            "examples": len(long_train),
        }
    return sets


def add_dataset_arguments(parser: Any, long_examples: int) -> None:
    """``--datasets`` (embedded, long or both) and ``--long-examples``, as every MRC bench script takes them."""
    parser.add_argument("--datasets", default="embedded,long", help="embedded, long or both (comma-separated)")
    parser.add_argument(
        "--long-examples", type=int, default=long_examples, help="questions in the generated long set"
    )


def chosen_paths(parser: Any, text: str, known: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """The comma-separated ``--paths`` of a bench script, each one it knows (else a usage error)."""
    paths = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(paths) - set(known))
    if unknown:
        parser.error(f"unknown --paths {unknown}: choose from {', '.join(known)}")
    return paths


def dataset_names(args: Any) -> list[str]:
    """The sets ``--datasets`` names, in its order."""
    return [d.strip() for d in args.datasets.split(",") if d.strip()]


def describe_dataset(name: str, info: dict[str, Any], limit: int | None = None) -> str:
    examples = load_examples(Path(info["train_file"]), limit)
    lengths = sorted(len(ex["context"]) for ex in examples)
    median = lengths[len(lengths) // 2]
    what = (
        "embedded data/mrc_sample train"
        if name == "embedded"
        else "generated from it (passages concatenated)"
    )
    return (
        f"{name}: {len(examples):,} questions, {what}; context characters min {lengths[0]:,} / median {median:,} / "
        f"max {lengths[-1]:,}"
    )


# ----------------------------------------------------------------------------- Hydra


def compose(overrides: Sequence[str], output_dir: Path) -> Any:
    """The config ``main.py`` would run with these overrides (Hydra's compose API), run dir ``output_dir``."""
    from tasks.runner import compose_config

    return compose_config(list(overrides), output_dir)


def build_shared_backbone(
    directory: Path, cache_dir: Path, seed: int, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """The tiny backbone of ``+experiment=mrc_curriculum`` (its tokenizer trained on the embedded training
    text) plus one set of random initial weights, saved as an HF model directory that every path loads."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from transformers import AutoModelForQuestionAnswering

    cfg = compose(
        ["+experiment=mrc_curriculum", f"paths.cache_dir={cache_dir}", f"seed={seed}", *overrides],
        directory.parent / "compose",
    )
    backbone = instantiate(cfg.backbone, _convert_="all")
    torch.manual_seed(seed)
    model = AutoModelForQuestionAnswering.from_config(backbone.config)
    backbone.save(directory)
    model.save_pretrained(directory)
    return {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": len(backbone.tokenizer),
        "tokenizer": str(OmegaConf.select(cfg, "backbone.tokenizer.algorithm", default="pretrained")),
        "attention": model.config._attn_implementation,
        "batch_size": int(cfg.datamodule.batch_size),
        "max_seq_length": int(cfg.datamodule.max_seq_length),
        "doc_stride": int(cfg.datamodule.doc_stride),
        "max_query_length": int(cfg.datamodule.max_query_length),
        "optimizer": OmegaConf.to_container(cfg.model.optimizer, resolve=True),
        "scheduler": OmegaConf.to_container(cfg.model.scheduler, resolve=True),
        "gradient_clip_val": float(cfg.trainer.gradient_clip_val or 0.0),
        "seed": seed,
    }


# ----------------------------------------------------------------------------- worker processes


def run_worker(
    script: Path, args: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None
) -> dict | str:
    """``python script args`` in its own process (its own peak RSS); its result is the line after RESULT_MARK.

    Returns the result dict, or the last line of its error output when it failed.
    """
    command = [sys.executable, str(script), *args]
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", **(env or {})}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f}s"
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
    return f"exit {done.returncode}: {tail[-1] if tail else 'no output'}"


def missing(module: str) -> str | None:
    """A row's text when an optional reference library is not installed, else None."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"not installed ({module}): pip install -e '.[bench]'"
    return None


def emit(result: dict[str, Any]) -> None:
    """A worker's result, for :func:`run_worker`."""
    print(RESULT_MARK + json.dumps(result), flush=True)


@contextlib.contextmanager
def silenced(log_file: Path) -> Iterator[None]:
    """Send what the libraries print (progress bars, summaries) to a file, at the descriptor level."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "a", encoding="utf-8") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def mask_size(attention_mask: Any) -> tuple[int, int, int]:
    """(samples, real tokens, padded positions) of a batch's attention mask."""
    return int(attention_mask.shape[0]), int(attention_mask.sum()), int(attention_mask.numel())


def median_run(runs: list[dict | str], key: str) -> dict | str:
    """The run with the median ``key`` (the lower middle one of an even count); a failure if all failed."""
    ok = sorted((r for r in runs if isinstance(r, dict)), key=lambda r: r[key])
    if not ok:
        return runs[-1]
    return {**ok[(len(ok) - 1) // 2], "runs": len(ok)}


# ----------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; ``align`` has one ``l`` or ``r`` per column (default: first left, others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":" if a == "r" else "-" * (w + 2)) for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.{digits}f}x"


def number(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def machine_line(torch_info: bool = True) -> str:
    """CPUs, threads and versions, for the line above a table."""
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    parts = [f"{os.cpu_count()} CPUs", f"OMP_NUM_THREADS={omp}"]
    if torch_info:
        import torch

        parts.append(f"torch {torch.__version__} with {torch.get_num_threads()} intra-op thread(s)")
    parts += [f"Python {sys.version.split()[0]}", time.strftime("%Y-%m-%d %H:%M")]
    return ", ".join(parts)
