"""HF-format export: a fit's ``hf_model/`` and ``task=export`` reload with transformers alone and reproduce the
checkpoint's logits and predictions; a later run starts from them (``backbone=local``, ``model.init_from``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from datamodules.mrc import MRCDataModule
from models.backbone import pretrained_backbone
from models.qa_postprocess import decode_predictions, topk_candidates
from models.reader import ExtractiveReader
from tests.conftest import TINY_LOOP, read_json

OPTIM = {"_target_": "torch.optim.AdamW", "lr": 3e-3}
SCHEDULE = {"_target_": "transformers.get_linear_schedule_with_warmup", "warmup_ratio": 0.0}


def checkpoint_reader(run_dir: Path, checkpoint: str) -> ExtractiveReader:
    """The reader as Lightning restores it: the run's backbone, the checkpoint's weights."""
    reader = ExtractiveReader(backbone=pretrained_backbone(str(run_dir / "backbone")), optimizer=OPTIM, scheduler=SCHEDULE)
    reader.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    return reader.eval()


@pytest.fixture(scope="module")
def validation(fitted_run: Path, tmp_path_factory: pytest.TempPathFactory) -> MRCDataModule:
    """The fitted run's validation features, built with the *exported* tokenizer."""
    from hydra.utils import instantiate

    from tasks.runner import compose_config

    base = tmp_path_factory.mktemp("export")
    cfg = compose_config(["+experiment=mrc_curriculum", *TINY_LOOP, f"paths.cache_dir={base / 'cache'}"], base / "run")
    tokenizer = AutoTokenizer.from_pretrained(fitted_run / "hf_model")
    datamodule = instantiate(cfg.datamodule, tokenizer=tokenizer, _convert_="all")
    datamodule.setup("validate")
    return datamodule


def test_fit_exports_the_best_checkpoint_in_hf_format(fitted_run: Path, validation: MRCDataModule) -> None:
    metrics = read_json(fitted_run / "metrics.json")
    hf_dir = Path(metrics["hf_model"])
    assert hf_dir == fitted_run / "hf_model" and (hf_dir / "model.safetensors").exists()
    assert read_json(hf_dir / "export.json")["source"] == metrics["best_checkpoint"]
    model = AutoModelForQuestionAnswering.from_pretrained(hf_dir).eval()  # transformers alone
    reader = checkpoint_reader(fitted_run, metrics["best_checkpoint"])
    eval_set = validation.eval_set("validation")
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("feature", "si", "sv", "ei", "ev")}
    with torch.no_grad():
        for batch in validation.val_dataloader():
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
            out = model(**inputs)
            ours = reader(batch)
            assert torch.equal(out.start_logits, ours.start_logits) and torch.equal(out.end_logits, ours.end_logits)
            for key, value in zip(rows, (batch["feature_index"], *topk_candidates(
                    out.start_logits, out.end_logits, batch["context_mask"], 20)), strict=True):  # fmt: skip
                rows[key].append(value)
    predictions, _ = decode_predictions(
        eval_set.examples, eval_set.example_index, eval_set.offset_mapping, *(torch.cat(v) for v in rows.values()),
        n_best_size=20, max_answer_length=30,
    )
    assert predictions == read_json(fitted_run / "predictions.json")  # the run's predictions, from the HF dir


def test_task_export_and_a_later_run_from_the_export(fitted_run: Path, tmp_path: Path) -> None:
    """``task=export`` writes the same weights as the fit's export; ``backbone=local`` and ``model.init_from``
    of the exported directory give a reader with the checkpoint's weights."""
    best = read_json(fitted_run / "metrics.json")["best_checkpoint"]
    from tasks.runner import compose_config, run_task

    out = tmp_path / "export"
    run_task(compose_config(["+experiment=mrc_curriculum", *TINY_LOOP, "task=export", f"ckpt_path={best}",
                             "backbone=local", f"backbone.name_or_path={fitted_run / 'backbone'}"], out))  # in-process
    metrics = read_json(out / "metrics.json")
    assert metrics["task"] == "export" and metrics["hf_model"] == str(out / "hf_model")
    exported, fitted = load_file(out / "hf_model" / "model.safetensors"), load_file(fitted_run / "hf_model" / "model.safetensors")
    assert exported.keys() == fitted.keys() and all(torch.equal(exported[k], fitted[k]) for k in fitted)

    reference = checkpoint_reader(fitted_run, best).state_dict()
    via_backbone = ExtractiveReader(backbone=pretrained_backbone(str(out / "hf_model")), optimizer=OPTIM, scheduler=SCHEDULE)
    via_init_from = ExtractiveReader(backbone=pretrained_backbone(str(fitted_run / "backbone")), optimizer=OPTIM,
                                     scheduler=SCHEDULE, init_from=str(out / "hf_model"))  # fmt: skip
    for reader in (via_backbone, via_init_from):
        state = reader.state_dict()
        assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)


def test_task_export_refuses_an_existing_directory(fitted_run: Path) -> None:
    """Nothing is overwritten: exporting into a directory that exists is an error naming it."""
    from models.export import export_hf

    reader = checkpoint_reader(fitted_run, read_json(fitted_run / "metrics.json")["best_checkpoint"])
    with pytest.raises(ValueError, match="already exists"):
        export_hf(reader, fitted_run / "hf_model")


def test_classifier_export_carries_its_label_map(fitted_run: Path, tmp_path: Path) -> None:
    """A classifier's export holds its classes (config.id2label, label_map.json) and reproduces its logits."""
    from transformers import AutoModelForSequenceClassification

    from models.classifier import SequenceClassifier
    from models.export import export_hf

    labels = ["entailment", "neutral", "contradiction"]
    classifier = SequenceClassifier(backbone=pretrained_backbone(str(fitted_run / "backbone")), optimizer=OPTIM,
                                    scheduler=SCHEDULE, labels=labels).eval()  # fmt: skip
    export_hf(classifier, tmp_path / "hf")
    assert read_json(tmp_path / "hf" / "label_map.json") == {name: i for i, name in enumerate(labels)}
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert reloaded.config.id2label == dict(enumerate(labels))
    batch = classifier.tokenizer(["서울은 크다.", "강은 길다."], padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, classifier(batch))
