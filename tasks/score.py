"""``task=score``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from core.errors import DataFormatError
from tasks.build import (
    require,
)
from tasks.outputs import (
    metric_name,
    mrc_scores,
)

log = logging.getLogger(__name__)


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
