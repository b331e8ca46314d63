"""The framework's one entry point: Hydra composes the run, ``task`` says what to do with it.

    python main.py +experiment=mrc_curriculum
    python main.py task=validate ckpt_path=outputs/.../checkpoints/last.ckpt
    python main.py task=predict ckpt_path=... datamodule.test_file=test.json
    python main.py task=score predictions=predictions.json datamodule.validation_file=gold.json
    python main.py task=ensemble ensemble.runs=[multirun/re_kfold/<date>/<time>]
"""

from __future__ import annotations

import json
import logging
import os
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
    backbone = build_backbone(cfg)
    if is_rank_zero():  # under DDP every process builds the run; one writes it
        backbone.save(output_dir / "backbone")
    datamodule = instantiate(cfg.datamodule, tokenizer=backbone.tokenizer, _convert_="all")
    model = instantiate(cfg.model, backbone=backbone, **model_arguments(cfg, datamodule), _convert_="all")
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.world_size > 1 and in_multirun():
        raise ValueError(
            "DDP re-runs main.py's command line once per process, which would start the whole sweep again: "
            "run multi-process trainers as single runs (no -m, no hparams_search)."
        )
    for logger in trainer.loggers:  # the resolved config is every logger's run config (W&B's too)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return {"backbone": backbone, "datamodule": datamodule, "model": model, "trainer": trainer}


def build_backbone(cfg: DictConfig) -> Any:
    """``cfg.backbone``; a pretrained name that cannot be loaded (offline, typo) is one clear error."""
    from hydra.utils import instantiate

    from models.safe_loading import pretrained_load_error

    try:
        return instantiate(cfg.backbone, _convert_="all")
    except Exception as error:
        name = cfg.backbone.get("name_or_path")
        clear = pretrained_load_error("backbone.name_or_path", str(name), error) if name else None
        if clear is None:
            raise
        raise clear from None


def model_arguments(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """What the datamodule knows and the model needs (a classifier's classes, read from the training data)."""
    provided = datamodule.model_arguments() if hasattr(datamodule, "model_arguments") else {}
    unknown = [key for key in provided if key not in cfg.model]
    if unknown:
        raise ValueError(
            f"{type(datamodule).__name__} gives the model {unknown}, which {cfg.model.get('_target_')} does not take: "
            "a classification datamodule needs model=classifier."
        )
    return provided


def require(cfg: DictConfig, key: str, why: str) -> Any:
    value = OmegaConf.select(cfg, key)
    if value in (None, ""):
        raise ValueError(f"task={cfg.task} needs {key}=...: {why}")
    return value


def preflight(cfg: DictConfig, *splits: str) -> None:
    """Read the task's MRC files before anything slow (tokenizer training, model download, training).

    A bad record then costs a second, not the minutes before the datamodule reaches it (or, for
    ``test_file`` in ``task=fit``, the whole training run). Other datamodules check their files in setup.
    """
    node = cfg.datamodule
    if not str(node.get("_target_", "")).endswith("MRCDataModule"):
        return
    from datamodules.mrc_formats import load_mrc_examples

    for split in splits:
        path = node.get(f"{split}_file")
        if path:
            load_mrc_examples(
                path,
                require_answers=split != "test",
                split=node.get(f"{split}_split"),
                normalize=node.get("normalize"),
            )


def checkpoint_arg(cfg: DictConfig, why: str | None = None) -> str | None:
    """``ckpt_path`` (required when ``why`` says what for), checked to be a file before anything slow runs."""
    from models.safe_loading import existing_checkpoint

    ckpt = require(cfg, "ckpt_path", why) if why else cfg.get("ckpt_path")
    return existing_checkpoint(ckpt) if ckpt else None


def verify_checkpoint(ckpt: str | None, run: dict[str, Any]) -> None:
    """Refuse a checkpoint of another tokenizer or model before Lightning loads it (weights only, no pickle)."""
    from models.safe_loading import check_checkpoint

    if ckpt:
        check_checkpoint(ckpt, run["model"], run["backbone"].tokenizer)


def save_predictions(run: dict[str, Any], output_dir: Path) -> None:
    model, trainer = run["model"], run["trainer"]
    if trainer.is_global_zero and hasattr(model, "last_predictions"):  # a masked LM predicts no answers
        write_json(output_dir / "predictions.json", model.last_predictions)
        if hasattr(model, "last_nbest"):  # the reader's n-best spans; a classifier's records hold probabilities
            write_json(output_dir / "nbest_predictions.json", model.last_nbest)


def metric_name(cfg: DictConfig) -> str:
    """``metric=`` (default korquad), checked: tasks call it first, so a mistyped name fails before any work."""
    from models.mrc_metrics import check_metric

    return check_metric(str(cfg.get("metric") or "korquad"))


def reader_metric(cfg: DictConfig, run: dict[str, Any]) -> dict[str, Any]:
    """``metric=klue_mrc`` or ``squad`` on a reader's validation predictions (under that name in metrics.json),
    beside the KorQuAD EM/F1 that training logs and checkpoints on; the questions scored are those predicted."""
    metric = metric_name(cfg)
    model, datamodule = run["model"], run["datamodule"]
    if metric == "korquad" or not hasattr(model, "last_nbest") or not hasattr(datamodule, "load_examples"):
        return {}
    if not run["trainer"].is_global_zero:
        return {}
    predictions = model.last_predictions
    examples = [ex for ex in datamodule.load_examples("validation", True) if ex["id"] in predictions]
    folds = cfg.datamodule.get("n_folds") is not None  # K-fold: the held-out fold of train_file, no question types
    gold = None if folds else cfg.datamodule.get("validation_file")
    return {metric: mrc_scores(cfg, examples, predictions, gold, cfg.datamodule.get("validation_split"))}


def save_test_predictions(cfg: DictConfig, run: dict[str, Any], output_dir: Path, ckpt: str | None) -> dict[str, Any]:
    """fit with ``datamodule.test_file``: that file's predictions too (``test_predictions.json``), e.g. per K-fold run."""
    model, trainer = run["model"], run["trainer"]
    if not cfg.datamodule.get("test_file") or not hasattr(model, "last_predictions"):
        return {}
    trainer.predict(model, datamodule=run["datamodule"], ckpt_path=ckpt, return_predictions=False, weights_only=True)
    if trainer.is_global_zero:
        write_json(output_dir / "test_predictions.json", model.last_predictions)
        if hasattr(model, "last_nbest"):  # a reader's n-best spans: what soft voting of K-fold readers reads
            write_json(output_dir / "test_nbest_predictions.json", model.last_nbest)
    return {"test_predictions": len(model.last_predictions)}


def export_artifacts(run: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """What a module writes besides checkpoints (``mlm_backbone/``, LoRA ``merged/``), from its weights.

    Rank 0 writes; the broadcast gives every rank the paths once they exist (a next stage loads them).
    """
    export = getattr(run["model"], "export_artifacts", None)
    if export is None:
        return {}
    trainer = run["trainer"]
    return trainer.strategy.broadcast(export(output_dir) if trainer.is_global_zero else {})


def export_best(cfg: DictConfig, run: dict[str, Any], output_dir: Path, source: str | None) -> dict[str, Any]:
    """``<run>/<export.dir>/``: the weights held now (the best checkpoint's) in HF format (models/export.py)."""
    from models.export import unexportable

    if not (cfg.get("export") or {}).get("enabled", True):
        return {}
    reason = unexportable(run["model"])
    if reason:
        log.info("export: no HF-format directory: %s", reason)
        return {}
    trainer = run["trainer"]
    out = hf_export(cfg, run["model"], output_dir, source or "the final weights") if trainer.is_global_zero else {}
    return trainer.strategy.broadcast(out)


def hf_export(cfg: DictConfig, model: Any, output_dir: Path, source: str) -> dict[str, Any]:
    """``export_hf`` with the ``export.*`` settings."""
    from models.export import export_hf

    node = cfg.get("export") or {}
    directory = output_dir / str(node.get("dir") or "hf_model")
    return export_hf(model, directory, merge_lora=bool(node.get("merge_lora", True)), source=source)


def eval_metrics(results: list[dict[str, Any]], prefix: str = "val") -> dict[str, float]:
    """Lightning's logged ``val_*`` values under the public names ``exact_match`` and ``f1``."""
    merged = {k: float(v) for result in results for k, v in result.items()}
    out: dict[str, Any] = {k.removeprefix(f"{prefix}_"): v for k, v in merged.items() if k.startswith(f"{prefix}_")}
    out["examples"] = int(out.pop("examples", 0))
    if "examples_total" in out:  # partial validation: which examples the scores cover (models/eval_coverage.py)
        from models.eval_coverage import describe_subset

        counts = {k: int(out[k]) for k in ("examples_total", "examples_missing", "examples_partial") if k in out}
        out.update(counts)
        out["subset"] = describe_subset(
            out["examples"], counts["examples_total"], counts["examples_missing"], counts.get("examples_partial", 0)
        )
    return out


# ----------------------------------------------------------------------------- tasks


def task_fit(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Train (resuming from ``ckpt_path`` when given), then validate the best checkpoint."""
    preflight(cfg, "train", "validation", "test")  # before the imports below: a bad file fails in a second
    metric_name(cfg)
    ckpt = checkpoint_arg(cfg)
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from callbacks.resume import interrupt_exit_code, stop_requested
    from callbacks.throughput import TrainThroughput
    from callbacks.tuning import tune

    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    backbone = run["backbone"]
    if not (ckpt or backbone.weights or backbone.source == "tiny" or cfg.model.get("init_from")):
        log.warning(  # backbone=local of a run's backbone/ (config and tokenizer only): say so, not silently
            "backbone.name_or_path=%s holds no weight files: training starts from random weights "
            "(set model.init_from= or ckpt_path= for trained ones)", backbone.source,
        )
    trainer, model, datamodule = run["trainer"], run["model"], run["datamodule"]
    tuning = OmegaConf.to_container(cfg.tune, resolve=True) if cfg.get("tune") else {}
    if cfg.get("ckpt_path") and (tuning.get("lr_find") or tuning.get("batch_size")):
        log.warning("resuming from ckpt_path: tune.* is skipped (the checkpoint holds the LR and the batch order)")
    elif tuning:
        tune(tuning, trainer, model, datamodule, output_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except SIGTERMException:  # Ctrl-C or SIGTERM: callbacks.last_checkpoint wrote last.ckpt
        raise SystemExit(interrupt_exit_code(trainer)) from None
    if stop_requested(trainer):  # asked to stop after Lightning's last check: stop all the same (last.ckpt is written)
        raise SystemExit(interrupt_exit_code(trainer))
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    results = trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
    metrics: dict[str, Any] = eval_metrics(results)
    throughput = next((c for c in trainer.callbacks if isinstance(c, TrainThroughput)), None)
    if throughput is not None:
        metrics["train_samples_per_second"] = throughput.samples_per_second
        metrics["train_seconds"] = throughput.seconds
    for callback in trainer.callbacks:  # callbacks that measure the run (callbacks/padding.py) add their numbers
        if callable(getattr(callback, "run_metrics", None)):
            metrics.update(callback.run_metrics())
    metrics["best_checkpoint"] = best
    metrics["global_step"] = trainer.global_step
    save_predictions(run, output_dir)
    metrics.update(reader_metric(cfg, run))
    metrics.update(export_artifacts(run, output_dir))  # after validate(ckpt_path=best): the best weights
    metrics.update(export_best(cfg, run, output_dir, best))
    metrics.update(save_test_predictions(cfg, run, output_dir, best))
    return metrics


def task_validate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt = checkpoint_arg(cfg, "the checkpoint to evaluate (e.g. outputs/.../checkpoints/last.ckpt)")
    preflight(cfg, "validation")
    metric_name(cfg)
    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    results = run["trainer"].validate(
        run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, verbose=False, weights_only=True
    )
    save_predictions(run, output_dir)
    return {**eval_metrics(results), **reader_metric(cfg, run), "checkpoint": str(ckpt)}


def task_export(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """A checkpoint as a ``save_pretrained`` directory (``<run>/<export.dir>/``): model, tokenizer, label map."""
    ckpt = checkpoint_arg(cfg, "the checkpoint to export (e.g. outputs/.../checkpoints/last.ckpt)")
    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    from models.export import load_weights

    load_weights(run["model"], ckpt)
    return {**hf_export(cfg, run["model"], output_dir, str(ckpt)), "checkpoint": str(ckpt)}


def task_predict(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt = checkpoint_arg(cfg, "the checkpoint that makes the predictions")
    require(cfg, "datamodule.test_file", "the questions to answer (gold answers are not needed)")
    preflight(cfg, "test")
    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    run["trainer"].predict(
        run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, return_predictions=False, weights_only=True
    )
    save_predictions(run, output_dir)
    return {"predicted_questions": len(run["model"].last_predictions), "checkpoint": str(ckpt)}


def task_score(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """EM/F1 of a predictions file against gold: ``metric=korquad`` (the official KorQuAD 1.0 script), ``klue_mrc``
    (EM, ROUGE-W) or ``squad`` (HF SQuAD token F1); see models/mrc_metrics.py.

    Both files are checked before the scorer (and torch, which it imports) loads: a wrong file fails in a second.
    """
    import unicodedata

    from datamodules.mrc_formats import load_mrc_examples
    metric_name(cfg)
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
    normalize = cfg.datamodule.get("normalize")
    examples = load_mrc_examples(
        gold_path, require_answers=True, split=cfg.datamodule.get("validation_split"), normalize=normalize
    )
    gold_ids = {ex["id"] for ex in examples}
    unknown = [qid for qid in predictions if qid not in gold_ids]
    if unknown:
        raise DataFormatError(
            pred_path, unknown[0],
            f"{len(unknown)} of {len(predictions)} predicted ids are not questions of the gold file {gold_path} "
            f"(e.g. {unknown[:3]}): the predictions were made for another file",
            "score against the file the predictions were made for (datamodule.validation_file=...), "
            "or drop the ids that do not belong to it",
        )
    if normalize:  # the gold texts were normalised; predictions made from the stored text must be too
        predictions = {qid: unicodedata.normalize(normalize, text) for qid, text in predictions.items()}
    scores = mrc_scores(cfg, examples, predictions, gold_path, cfg.datamodule.get("validation_split"))
    return {**scores, "predictions_file": str(pred_path)}


def mrc_scores(
    cfg: DictConfig, examples: list[Any], predictions: dict[str, str], gold_path: Any, split: str | None
) -> dict[str, Any]:
    """``metric=`` (korquad | klue_mrc | squad) scores on ``examples``, per ``question_type`` when the gold has it."""
    from models.mrc_metrics import score_against

    return score_against(examples, predictions, metric_name(cfg), gold_path, split)


def task_ensemble(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Vote several classifier runs (soft: class probabilities) or reader runs (hard or soft: answers, n-best
    spans) from run dirs or a sweep dir into predictions.json; the kind is read from the runs' outputs."""
    from models.ensemble import run_ensemble

    return run_ensemble(OmegaConf.to_container(cfg.ensemble, resolve=True), output_dir, metric_name(cfg))


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


# ----------------------------------------------------------------------------- stages

# What the next stage starts from, by preference: an exported HF directory, else the best checkpoint.
HANDOFF_KEYS = ("mlm_backbone", "merged_model")


def stage_list(cfg: DictConfig) -> list[dict[str, Any]]:
    """``stages:`` entries: ``name`` (its sub-directory), ``overrides`` (Hydra overrides), ``from_previous``."""
    stages = OmegaConf.to_container(cfg.stages, resolve=False)
    if not isinstance(stages, list) or not stages:
        raise ValueError("stages must be a list of {name, overrides} entries: see conf/experiment/mrc_two_stage.yaml.")
    names = []
    for index, stage in enumerate(stages):
        name = stage.get("name") if isinstance(stage, dict) else None
        overrides = stage.get("overrides", []) if isinstance(stage, dict) else None
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stages[{index}]: name each stage with letters, digits, '-' or '_' (got {name!r}).")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ValueError(f"stages[{index}] ({name}): overrides must be a list of Hydra overrides (k=v).")
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"stages: names must be unique (got {names}); each one is a sub-directory of the run.")
    return stages


def quote(value: Any) -> str:
    """A path as a Hydra override value (quoted: paths may hold characters the override grammar reserves)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def compose_stage(
    cli: list[str], own: list[str], internal: list[str], name: str
) -> tuple[DictConfig, list[str]]:
    """The stage's config: the command line's overrides, then the stage's own (and ``internal``), which win.

    A command-line override of a key the stage sets is dropped; so is one inside a config group the
    stage switches (``datamodule=mlm_text``) when the new option has no such key. Returns the dropped ones.
    """
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config_name = HydraConfig.get().job.config_name
    groups = set(GlobalHydra.instance().config_loader().list_groups(""))
    parser = OverridesParser.create()
    try:
        own_keys = {o.key_or_group for o in parser.parse_overrides(own + internal)}
        switched = own_keys & groups
        kept, dropped, unsure = [], [], []
        for override in parser.parse_overrides(cli):
            line, key = override.input_line, override.key_or_group
            if key in own_keys:
                dropped.append(line)
            elif key.split(".")[0] in switched and key not in groups:
                unsure.append((line, override))
            else:
                kept.append(line)
        if unsure:
            probe = compose(config_name=config_name, overrides=kept + own + internal)
            absent = object()
            for line, override in unsure:
                exists = OmegaConf.select(probe, override.key_or_group, default=absent) is not absent
                (kept if exists and not override.is_add() else dropped).append(line)
        stage_cfg = compose(config_name=config_name, overrides=kept + own + internal)
    except (HydraException, OmegaConfBaseException) as error:
        raise ValueError(f"stage {name} (overrides {own}): {error}") from None
    if stage_cfg.task not in TASKS:
        raise ValueError(f"stage {name}: task={stage_cfg.task!r} is unknown: choose one of {', '.join(TASKS)}.")
    return stage_cfg, dropped


def handoff(name: str, stage_dir: Path, metrics: dict[str, Any]) -> tuple[str, str]:
    """(backbone directory, weights) the next stage starts from: tokenizer and encoder stay together."""
    for key in HANDOFF_KEYS:
        if metrics.get(key):
            return str(metrics[key]), str(metrics[key])
    weights = metrics.get("best_checkpoint") or stage_dir / "checkpoints" / "last.ckpt"
    if not Path(weights).exists():
        raise ValueError(f"stage {name} left no checkpoint for the next stage to start from ({weights}).")
    return str(stage_dir / "backbone"), str(weights)


def run_stages(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run ``cfg.stages`` in order, each in ``<run>/<name>/``, each from the previous stage's weights.

    A later stage loads the previous stage's tokenizer and config (``backbone=local``) and its weights
    (``model.init_from``: an exported directory or the best checkpoint); optimizer and schedule start fresh.
    The run's metrics are the last stage's, plus every stage's under ``stages``.
    """
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("ckpt_path"):
        raise ValueError("ckpt_path= resumes one training run; it is ambiguous for a multi-stage experiment.")
    stages = stage_list(cfg)
    cli = list(HydraConfig.get().overrides.task)

    def internal(index: int, previous: tuple[str, str] | None) -> list[str]:
        """Run dir and tag; unless ``from_previous: false``, the previous stage's backbone and weights."""
        name = stages[index]["name"]
        tags = ",".join(quote(tag) for tag in [*(cfg.get("tags") or []), name])  # loggers tell the stages apart
        out = [f"paths.output_dir={quote(output_dir / name)}", f"tags=[{tags}]"]
        if index > 0 and stages[index].get("from_previous", True):
            backbone_dir, weights = previous or ("<previous stage>", "<previous stage>")
            out += ["backbone=local", f"backbone.name_or_path={quote(backbone_dir)}"]
            out.append(f"model.init_from={quote(weights)}")
        return out

    for index, stage in enumerate(stages):  # every stage composes before the first one trains
        compose_stage(cli, stage.get("overrides", []), internal(index, None), stage["name"])
    results: dict[str, dict[str, Any]] = {}
    previous: tuple[str, str] | None = None
    for index, stage in enumerate(stages):
        name, stage_dir = stage["name"], output_dir / stage["name"]
        stage_cfg, dropped = compose_stage(cli, stage.get("overrides", []), internal(index, previous), name)
        if is_rank_zero():
            stage_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(stage_cfg, stage_dir / "config.yaml", resolve=True)  # what the stage ran with
            print(f"Stage {index + 1}/{len(stages)} {name}: task={stage_cfg.task}, run dir {stage_dir}")
        if dropped:
            log.info("stage %s: command-line overrides it replaces or cannot take: %s", name, dropped)
        try:
            metrics = {"task": stage_cfg.task, "stage": name, **TASKS[stage_cfg.task](stage_cfg, stage_dir)}
        finally:
            finish_wandb()  # one W&B run per stage
        if is_rank_zero():
            write_json(stage_dir / "metrics.json", metrics)
        results[name] = metrics
        if index + 1 < len(stages):
            previous = handoff(name, stage_dir, metrics)
    final = {k: v for k, v in results[stages[-1]["name"]].items() if k not in ("task", "stage")}
    return {**final, "stages": results}


TASKS: dict[str, Callable[[DictConfig, Path], dict[str, Any]]] = {
    "fit": task_fit,
    "validate": task_validate,
    "predict": task_predict,
    "score": task_score,
    "ensemble": task_ensemble,
    "retrieve": task_retrieve,
    "odqa": task_odqa,
    "export": task_export,
}


def run_task(cfg: DictConfig) -> dict[str, Any]:
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} is unknown: choose one of {', '.join(TASKS)}.")
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("print_config", True) and is_rank_zero():
        print_config(cfg)
    if is_rank_zero():
        print(f"Run dir: {output_dir}")
    try:
        metrics = run_stages(cfg, output_dir) if cfg.get("stages") else TASKS[cfg.task](cfg, output_dir)
    finally:
        finish_wandb()
    metrics = {"task": cfg.task, **metrics}
    if is_rank_zero():
        write_json(output_dir / "metrics.json", metrics)
        print(json.dumps(metrics, ensure_ascii=False, indent=2))
    return metrics


def is_rank_zero() -> bool:
    """Under DDP Lightning re-runs this script once per process; only rank 0 writes run files."""
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
    if rank_zero is not None:
        return rank_zero.rank_zero_only.rank == 0
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):  # Lightning's order, before import
        if key in os.environ:
            return int(os.environ[key]) == 0
    return True


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


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


# Set once Hydra has composed the config and a job runs: a failure before that is Hydra's (the command line).
_JOB_STARTED = False


def config_hint(args: list[str]) -> str | None:
    """After Hydra refused the command line: the existing keys nearest to those it could not find.

    Only the config-group choices of ``args`` are composed (they decide which keys exist); every other
    ``key=value`` whose key is missing gets its closest matches (difflib) among all keys and group names.
    """
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except Exception:  # noqa: BLE001 - Hydra has already said what is wrong with the syntax
        return None
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        groups = set(GlobalHydra.instance().config_loader().list_groups(""))
        choices = [o.input_line for o in overrides if o.key_or_group.split("@")[0] in groups]
        try:
            cfg = compose("config", overrides=choices, return_hydra_config=True)
        except Exception:  # noqa: BLE001 - a bad group option: Hydra's message lists the options
            return None
    GlobalHydra.instance().clear()
    keys = sorted({*groups, *_dotted_keys(OmegaConf.to_container(cfg, resolve=False))})
    absent = object()
    lines = []
    for override in overrides:
        key = override.key_or_group
        if override.is_add() or key in groups or OmegaConf.select(cfg, key, default=absent) is not absent:
            continue
        near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
        if not near:
            lines.append(f"hint: {key} is not a config key and none is close to it.")
        else:
            others = f" (or {', '.join(near[1:])})" if len(near) > 1 else ""
            lines.append(f"hint: {key} is not a config key; did you mean {near[0]}?{others}")
    if lines:
        lines.append("(python main.py --cfg job prints every key; +key=value adds a new one)")
    return "\n".join(lines) or None


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a nested config as ``a.b.c`` (lists are leaves)."""
    if not isinstance(node, dict):
        return []
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        out += [path, *_dotted_keys(value, path + ".")]
    return out


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config ``python main.py <overrides>`` would run with, run dir ``output_dir`` (Hydra's compose API):
    for tests and benchmarks that build a run in-process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"hydra.run.dir={output_dir}"], return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; a bad input or config ends with a clear message and exit code 1, not a traceback."""
    global _JOB_STARTED
    _JOB_STARTED = True
    try:
        metrics = run_task(cfg)
    except Exception as error:
        cause = user_error(error)
        if cause is None or cfg.get("debug", False):
            raise
        if in_multirun():  # the sweeper records the failed job (Optuna: state FAIL) and decides what follows
            raise cause from None
        print(f"\nerror: {cause}\n(run with debug=true for the full traceback)", file=sys.stderr)
        sys.exit(1)
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None


def cli() -> None:
    """``main()``; when Hydra refuses the command line itself, add the nearest existing key to its message."""
    try:
        main()
    except (SystemExit, Exception) as stop:
        failed = not isinstance(stop, SystemExit) or stop.code not in (0, None)
        if failed and not _JOB_STARTED:
            try:
                hint = config_hint(sys.argv[1:])
            except Exception:  # noqa: BLE001 - a hint must never hide the real error
                hint = None
            if hint:
                print(hint, file=sys.stderr)
        raise


if __name__ == "__main__":
    cli()
