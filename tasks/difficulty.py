"""The difficulty step: the curriculum scores that need a model or a retriever, injected into the datamodule.

``datamodule.curriculum.difficulty=loss`` (a previous run's per-sample loss, ``teacher_ckpt``) and
``difficulty=bm25`` (minus the BM25 score of a question's own passage) are computed here, not in the data
layer: :func:`attach_difficulty` gives the datamodule a scorer, which its ``setup`` calls with a
:class:`datamodules.curriculum.DifficultyRequest` (the training examples, a loader over their features, the
feature settings). Scores are cached as JSON under ``cache_dir/difficulty``, keyed by the data, the tokenizer,
the feature settings and the teacher file (or the BM25 tokenizer).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.cache import build_once
from core.errors import DataFormatError
from core.files import write_json
from datamodules.base import TaskDataModule
from datamodules.curriculum import DifficultyRequest, mean_by_example

log = logging.getLogger(__name__)

CACHE_VERSION = 1
TEACHER_KEY = "datamodule.curriculum.teacher_ckpt"


def attach_difficulty(datamodule: Any) -> Any:
    """Give a project datamodule the scorer of the expensive difficulties; returns the datamodule."""
    if isinstance(datamodule, TaskDataModule):
        datamodule.use_difficulty_scorer(DifficultyScorer(teacher_class(datamodule)))
    return datamodule


def teacher_class(datamodule: Any) -> type | None:
    """The module a ``difficulty=loss`` teacher checkpoint is rebuilt as, for this kind of datamodule."""
    from datamodules.classification import ClassificationDataModule
    from datamodules.mrc import MRCDataModule
    from datamodules.regression import RegressionDataModule

    if isinstance(datamodule, MRCDataModule):
        from models.reader import ExtractiveReader

        return ExtractiveReader
    if isinstance(datamodule, RegressionDataModule):
        from models.regressor import SequenceRegressor

        return SequenceRegressor
    if isinstance(datamodule, ClassificationDataModule):
        from models.classifier import SequenceClassifier

        return SequenceClassifier
    return None


class DifficultyScorer:
    """``(request) -> one score per example`` for ``bm25`` and ``loss``, cached under ``cache_dir/difficulty``."""

    def __init__(self, module_class: type | None) -> None:
        self.module_class = module_class

    def __call__(self, request: DifficultyRequest) -> list[float]:
        spec, examples = request.spec, request.examples
        key: dict[str, Any] = {"difficulty": spec.difficulty, "data": data_fingerprint(examples, request.tokenizer),
                               **request.settings}  # fmt: skip
        if spec.difficulty == "bm25":
            key["tokenizer"] = spec.bm25_tokenizer
            return cached_scores(request.cache_dir, key, lambda: bm25_difficulty(examples, spec.bm25_tokenizer))
        if spec.difficulty != "loss":
            raise ValueError(f"datamodule.curriculum.difficulty={spec.difficulty!r} is not computed by a task step.")
        if self.module_class is None:
            raise ValueError("datamodule.curriculum.difficulty=loss: this datamodule has no teacher model kind.")
        key["teacher"] = file_identity(str(spec.teacher_ckpt))
        module_class, index = self.module_class, request.example_index

        def compute() -> list[float]:
            losses = teacher_losses(str(spec.teacher_ckpt), module_class, request.tokenizer, request.loader)
            return losses if index is None else mean_by_example(losses, index, len(examples))

        return cached_scores(request.cache_dir, key, compute)


# ----------------------------------------------------------------------------- scores


def bm25_difficulty(examples: Sequence[Mapping[str, Any]], tokenizer_name: str) -> list[float]:
    """Minus the BM25 score of each question's own context, among the training set's distinct contexts:
    a question that shares few (rare) words with its passage is hard to ground. The project's BM25
    (``retrievals``, rank-bm25's Okapi) over ``tokenizer_name`` tokens (``retriever.tokenizer.name`` values)."""
    from retrievals import BM25Retriever, Passage

    contexts = list(dict.fromkeys(ex["context"] for ex in examples))
    position = {text: i for i, text in enumerate(contexts)}
    retriever = BM25Retriever(tokenizer=tokenizer_name, index_title=False, engine="numpy")
    retriever.index([Passage(id=str(i), text=text) for i, text in enumerate(contexts)])
    token_lists = retriever.tokenizer.tokenize([ex["question"] for ex in examples])
    return [-float(retriever.get_scores(tokens)[position[ex["context"]]]) for tokens, ex in
            zip(token_lists, examples, strict=True)]  # fmt: skip


def teacher_losses(teacher_ckpt: str, module_class: type, tokenizer: Any, loader: Any) -> list[float]:
    """Per-sample loss of a previous run's model (``teacher_ckpt``) over ``loader`` (in dataset order).

    The teacher is rebuilt from its run's ``backbone/`` config and the checkpoint's hyper-parameters, and
    its checkpoint checked like ``ckpt_path`` (weights only; the vocabulary must be this run's, since the
    features are this run's token ids). The module's ``per_sample_loss(batch)`` gives one loss per row.
    """
    import torch

    from models.backbone import pretrained_backbone
    from models.safe_loading import check_checkpoint, existing_checkpoint, load_checkpoint

    path = existing_checkpoint(teacher_ckpt, key=TEACHER_KEY)
    backbone_dir = Path(path).parent.parent / "backbone"
    if not (backbone_dir / "config.json").is_file():
        raise DataFormatError(path, None, f"has no run directory around it ({backbone_dir}/config.json is missing)",
                              f"give a checkpoint inside a fit run's directory: {TEACHER_KEY}=<run dir>/checkpoints/<file>.ckpt")
    checkpoint = load_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    backbone = pretrained_backbone(str(backbone_dir), load_weights=False)
    backbone.tokenizer = tokenizer  # this run's token ids: check_checkpoint refuses another vocabulary
    accepted = inspect.signature(module_class).parameters
    kwargs = {k: v for k, v in hparams.items() if k in accepted and k not in ("backbone", "init_from")}
    module = module_class(backbone=backbone, **kwargs)
    check_checkpoint(path, module, tokenizer)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    losses: list[float] = []
    with torch.inference_mode():
        for batch in loader:
            losses += module.per_sample_loss(batch).tolist()
    log.info("teacher %s: loss of %d training samples (mean %.3f)", path, len(losses), float(np.mean(losses)))
    return losses


# ----------------------------------------------------------------------------- the cache


def file_identity(path: str, key: str = TEACHER_KEY) -> dict[str, Any]:
    """What changes when a checkpoint file is replaced: its resolved path, size and modification time
    (a missing file is a clear error naming ``key`` and the checkpoints nearby)."""
    from models.safe_loading import existing_checkpoint

    stat = os.stat(existing_checkpoint(path, key=key))
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def data_fingerprint(examples: Sequence[Mapping[str, Any]], tokenizer: Any) -> str:
    """A hash of the examples (as the datamodule holds them) and the tokenizer's vocabulary."""
    from models.safe_loading import tokenizer_fingerprint

    digest = hashlib.sha256(json.dumps(list(examples), sort_keys=True, ensure_ascii=False, default=str).encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    return digest.hexdigest()[:32]


def cached_scores(cache_dir: str | None, key: Mapping[str, Any], compute: Callable[[], list[float]]) -> list[float]:
    """``compute()`` once per ``key`` (the data, tokenizer, difficulty and its inputs), kept as JSON under
    ``cache_dir/difficulty`` (atomic writes: a crash leaves no half file; concurrent runs compute it once)."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **key}, sort_keys=True, default=str).encode()).hexdigest()
    path = Path(cache_dir) / "difficulty" / f"{key.get('difficulty', 'scores')}-{digest[:20]}.json"

    def load() -> list[float]:
        scores = json.loads(path.read_text(encoding="utf-8"))
        log.info("difficulty %s: %d cached scores from %s", key.get("difficulty"), len(scores), path)
        return scores

    def build() -> list[float]:
        scores = compute()
        write_json(path, scores)
        return scores

    return build_once(path, path.is_file, build, load)
