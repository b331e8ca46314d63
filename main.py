"""The framework's one entry point: Hydra composes the run, ``task`` says what to do with it.

    python main.py +experiment=mrc_curriculum
    python main.py task=validate ckpt_path=outputs/.../checkpoints/last.ckpt
    python main.py task=predict ckpt_path=... datamodule.test_file=test.json
    python main.py task=score predictions=predictions.json datamodule.validation_file=gold.json
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from datamodules.errors import DataFormatError  # noqa: E402
from datamodules.files import write_json  # noqa: E402

log = logging.getLogger("main")
# Lightning prints through its own handler; without this Hydra's root handler prints every line twice.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).propagate = False
warnings.filterwarnings("ignore", message=r".*treespec.*")  # Lightning 2.6 vs torch 2.13, harmless
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))


# ----------------------------------------------------------------------------- output helpers


def print_config(cfg: DictConfig) -> None:
    """The composed config as a rich tree, one branch per config group."""
    import rich
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    rich.print(tree)


# ----------------------------------------------------------------------------- builders


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[Any]:
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor

    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None or "_target_" not in node:
            continue
        callback = instantiate(node)
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            log.info("logger=none: leaving out the %s callback, which needs a logger", name)
            continue
        callbacks.append(callback)
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    from hydra.utils import instantiate

    return [instantiate(node) for node in (cfg.get("logger") or {}).values() if node and "_target_" in node]


def build_run(cfg: DictConfig) -> dict[str, Any]:
    """Backbone -> datamodule -> model -> trainer, each from its config group."""
    from hydra.utils import instantiate
    from lightning.pytorch import seed_everything

    seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    backbone = instantiate(cfg.backbone, _convert_="all")
    backbone.save(output_dir / "backbone")
    datamodule = instantiate(cfg.datamodule, tokenizer=backbone.tokenizer, _convert_="all")
    model = instantiate(cfg.model, backbone=backbone, _convert_="all")
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if loggers:
        trainer.logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return {"backbone": backbone, "datamodule": datamodule, "model": model, "trainer": trainer}


def require(cfg: DictConfig, key: str, why: str) -> Any:
    value = OmegaConf.select(cfg, key)
    if value in (None, ""):
        raise ValueError(f"task={cfg.task} needs {key}=...: {why}")
    return value


def save_predictions(run: dict[str, Any], output_dir: Path) -> None:
    model, trainer = run["model"], run["trainer"]
    if trainer.is_global_zero:
        write_json(output_dir / "predictions.json", model.last_predictions)
        write_json(output_dir / "nbest_predictions.json", model.last_nbest)


def eval_metrics(results: list[dict[str, Any]], prefix: str = "val") -> dict[str, float]:
    """Lightning's logged ``val_*`` values under the public names ``exact_match`` and ``f1``."""
    merged = {k: float(v) for result in results for k, v in result.items()}
    out = {k.removeprefix(f"{prefix}_"): v for k, v in merged.items() if k.startswith(f"{prefix}_")}
    out["examples"] = int(out.pop("examples", 0))
    return out


# ----------------------------------------------------------------------------- tasks


def task_fit(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Train (resuming from ``ckpt_path`` when given), then validate the best checkpoint."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks.throughput import TrainThroughput

    run = build_run(cfg)
    trainer, model, datamodule = run["trainer"], run["model"], run["datamodule"]
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    results = trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics: dict[str, Any] = eval_metrics(results)
    throughput = next((c for c in trainer.callbacks if isinstance(c, TrainThroughput)), None)
    if throughput is not None:
        metrics["train_samples_per_second"] = throughput.samples_per_second
        metrics["train_seconds"] = throughput.seconds
    metrics["best_checkpoint"] = best
    metrics["global_step"] = trainer.global_step
    save_predictions(run, output_dir)
    return metrics


def task_validate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt = require(cfg, "ckpt_path", "the checkpoint to evaluate (e.g. outputs/.../checkpoints/last.ckpt)")
    run = build_run(cfg)
    results = run["trainer"].validate(run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, verbose=False)
    save_predictions(run, output_dir)
    return {**eval_metrics(results), "checkpoint": str(ckpt)}


def task_predict(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt = require(cfg, "ckpt_path", "the checkpoint that makes the predictions")
    require(cfg, "datamodule.test_file", "the questions to answer (gold answers are not needed)")
    run = build_run(cfg)
    run["trainer"].predict(run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, return_predictions=False)
    save_predictions(run, output_dir)
    return {"predicted_questions": len(run["model"].last_predictions), "checkpoint": str(ckpt)}


def task_score(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """EM/F1 of a predictions file against gold, exactly as the official KorQuAD 1.0 script."""
    from datamodules.mrc_formats import load_mrc_examples, to_squad_json
    from models.qa_metrics import evaluate

    pred_path = Path(require(cfg, "predictions", "a JSON file {question id: answer text}"))
    gold_path = require(cfg, "datamodule.validation_file", "the gold file to score against")
    if not pred_path.exists():
        raise FileNotFoundError(f"predictions={pred_path}: no such file.")
    try:
        predictions = json.loads(pred_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(pred_path, None, f"not valid JSON ({error})", "write {id: answer} as JSON") from None
    if not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        raise DataFormatError(
            pred_path, None, "predictions must be one JSON object mapping question id to answer text",
            'write {"question-id": "answer text", ...} (predictions.json of a run has this layout)',
        )
    examples = load_mrc_examples(gold_path, require_answers=True, split=cfg.datamodule.get("validation_split"))
    unknown = sorted(set(predictions) - {ex["id"] for ex in examples})
    if unknown:
        log.warning("%d predicted ids are not in the gold file (e.g. %s); they are ignored", len(unknown), unknown[:3])
    scores = evaluate(to_squad_json(examples)["data"], predictions)
    return {**scores, "examples": len(examples), "predictions_file": str(pred_path)}


def task_retrieve(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Index ``retriever.corpus_file`` (or the validation contexts) and retrieve for every question."""
    from retrievals.task import run_retrieve

    return run_retrieve(
        cfg.retriever,
        cfg.datamodule.get("validation_file"),
        output_dir,
        validation_split=cfg.datamodule.get("validation_split"),
    )


def task_odqa(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Retrieve ``retriever.top_k`` passages per question, read them all, keep the best-scoring span."""
    from datamodules.mrc_formats import load_mrc_examples, to_squad_json
    from models.qa_metrics import evaluate
    from retrievals.corpus import gold_passage_ids, load_queries
    from retrievals.odqa import choose_answers, passage_examples
    from retrievals.task import prepare_retriever, retrieve_passages

    ckpt = require(cfg, "ckpt_path", "the reader checkpoint (a fit run's checkpoints/last.ckpt)")
    split_key = "test" if cfg.datamodule.get("test_file") else "validation"
    questions_file = require(cfg, f"datamodule.{split_key}_file", "the questions to answer")
    split = cfg.datamodule.get(f"{split_key}_split")
    queries = load_queries(questions_file, split=split)
    retriever, passages, info = prepare_retriever(
        cfg.retriever, fallback_corpus_file=questions_file, fallback_corpus_split=split
    )
    top_k = int(cfg.retriever.top_k)
    if top_k > len(passages):
        raise ValueError(
            f"retriever.top_k={top_k} is larger than the corpus ({len(passages)} passages): "
            f"set retriever.top_k<={len(passages)}."
        )
    retrieved = retrieve_passages(retriever, passages, queries, top_k)
    run = build_run(cfg)
    run["datamodule"].provide_examples("test", passage_examples(queries, retrieved))
    run["trainer"].predict(run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, return_predictions=False)
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
        "index_seconds": info.get("index_seconds", info.get("index_load_seconds")),
        "checkpoint": str(ckpt),
    }
    gold = load_mrc_examples(questions_file, require_answers=False, split=split)
    if gold and all(ex["answers"] for ex in gold):
        metrics.update(evaluate(to_squad_json(gold)["data"], predictions))
        gold_passages = gold_passage_ids(queries, passages)
        hit = sum(any(p.id in gold_passages.get(q, ()) for p, _ in hits) for q, hits in retrieved.items())
        metrics[f"retrieval_recall@{top_k}"] = hit / max(len(retrieved), 1)
    return metrics


TASKS: dict[str, Callable[[DictConfig, Path], dict[str, Any]]] = {
    "fit": task_fit,
    "validate": task_validate,
    "predict": task_predict,
    "score": task_score,
    "retrieve": task_retrieve,
    "odqa": task_odqa,
}


def run_task(cfg: DictConfig) -> dict[str, Any]:
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} is unknown: choose one of {', '.join(TASKS)}.")
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("print_config", True):
        print_config(cfg)
    print(f"Run dir: {output_dir}")
    try:
        metrics = TASKS[cfg.task](cfg, output_dir)
    finally:
        finish_wandb()
    metrics = {"task": cfg.task, **metrics}
    write_json(output_dir / "metrics.json", metrics)
    print(json.dumps(metrics, ensure_ascii=False, indent=2))
    return metrics


def finish_wandb() -> None:
    """Each multirun job must close its W&B run, or the next job logs into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


USER_ERRORS = (DataFormatError, FileNotFoundError, ValueError)


def user_error(error: BaseException) -> BaseException | None:
    """The bad-input error behind ``error``, also when Hydra's instantiate wrapped it; None for bugs."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, USER_ERRORS):
            return seen
        seen = seen.__cause__
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; a bad input or config ends with a clear message and exit code 1, not a traceback."""
    try:
        metrics = run_task(cfg)
    except Exception as error:
        cause = user_error(error)
        if cause is None or cfg.get("debug", False):
            raise
        print(f"\nerror: {cause}\n(run with debug=true for the full traceback)", file=sys.stderr)
        sys.exit(1)
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None


if __name__ == "__main__":
    main()
