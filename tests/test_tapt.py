"""Task-adaptive pre-training: the MLM text datamodule, the MLM module, and TAPT -> MRC in one command."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

from datamodules.mlm_text import MLMTextDataModule, read_texts
from datamodules.mrc_formats import load_mrc_examples
from models.backbone import tiny_backbone
from tests.conftest import SAMPLE, TINY_RUN, read_json, run_main

TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tapt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TAPT for one epoch, then the reader; no weight decay: tokens the reader never sees keep TAPT's rows."""
    base = tmp_path_factory.mktemp("tapt")
    run_main(
        "+experiment=tapt_then_mrc", *TINY_RUN, "tapt.epochs=1", "model.optimizer.weight_decay=0",
        run_dir=base / "run", cache_dir=base / "cache",
    )
    return base / "run"


def test_tapt_writes_a_loadable_backbone_and_perplexity(tapt_run: Path) -> None:
    metrics = read_json(tapt_run / "metrics.json")
    tapt = metrics["stages"]["tapt"]
    assert list(metrics["stages"]) == ["tapt", "mrc"] and "exact_match" in metrics
    assert tapt["perplexity"] == pytest.approx(math.exp(tapt["mlm_loss"]), rel=1e-4)
    assert 1.0 < tapt["perplexity"] < 1e5 and tapt["examples"] > 0
    assert "loss" in Path(tapt["best_checkpoint"]).name  # checkpoints chosen by the MLM loss, not EM
    backbone_dir = Path(tapt["mlm_backbone"])
    assert backbone_dir == tapt_run / "tapt" / "mlm_backbone"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (backbone_dir / name).exists(), name
    assert isinstance(AutoModelForMaskedLM.from_pretrained(backbone_dir), torch.nn.Module)
    assert (tapt_run / "tapt" / "csv" / "metrics.csv").read_text().splitlines()[0].count("val_perplexity") == 1
    mrc = OmegaConf.load(tapt_run / "mrc" / "config.yaml")
    assert Path(mrc.backbone.name_or_path) == backbone_dir and Path(mrc.model.init_from) == backbone_dir
    # TAPT read the training file and the extra file (the validation text); the reader only the training file
    tapt_cfg = OmegaConf.load(tapt_run / "tapt" / "config.yaml")
    assert [Path(f).name for f in tapt_cfg.datamodule.files] == ["validation.json"]
    assert Path(tapt_cfg.datamodule.train_file) == SAMPLE / "train.json"


def test_reader_starts_from_the_tapt_encoder(tapt_run: Path) -> None:
    tapt = load_file(tapt_run / "tapt" / "mlm_backbone" / "model.safetensors")
    best = read_json(tapt_run / "metrics.json")["best_checkpoint"]
    reader = torch.load(best, map_location="cpu", weights_only=True)
    key = "model.embeddings.tok_embeddings.weight"
    tapt_rows, reader_rows = tapt[key], reader["state_dict"][f"encoder.{key}"]
    # [MASK] is trained by TAPT and never occurs in reader inputs: without weight decay its row stays TAPT's
    mask_id = AutoTokenizer.from_pretrained(tapt_run / "tapt" / "mlm_backbone").mask_token_id
    assert torch.equal(tapt_rows[mask_id], reader_rows[mask_id])
    assert not torch.equal(tapt_rows, reader_rows)  # and the reader did train


# ----------------------------------------------------------------------------- the text datamodule


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    backbone = tiny_backbone(
        [SAMPLE / "train.json"], ["context", "question"], "modernbert", TINY_CONFIG, {"vocab_size": 800},
        cache_dir=tmp_path_factory.mktemp("cache"),
    )
    return backbone.tokenizer


def test_texts_are_the_chosen_fields_without_answers() -> None:
    examples = load_mrc_examples(SAMPLE / "validation.json")
    questions = read_texts([SAMPLE / "validation.json"], ["question"])
    assert questions == list(dict.fromkeys(ex["question"] for ex in examples))
    both = read_texts([SAMPLE / "validation.json"], ["context", "question"])
    assert set(both) == {ex["context"] for ex in examples} | set(questions)


def test_whole_word_masking_masks_whole_words(tokenizer) -> None:
    datamodule = MLMTextDataModule(
        tokenizer, train_file=str(SAMPLE / "validation.json"), whole_word_mask=True, mlm_probability=0.3,
        max_seq_length=64, max_train_examples=64, batch_size=16, validation_ratio=0.1,
    )
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    labels = batch["labels"]
    assert (labels != -100).any()
    for row in range(labels.size(0)):
        ids = torch.where(labels[row] != -100, labels[row], batch["input_ids"][row]).tolist()
        tokens = tokenizer.convert_ids_to_tokens(ids)
        masked = (labels[row] != -100).tolist()
        for i in range(1, len(tokens)):
            # a word piece is masked exactly when the piece before it is (a window may start mid-word)
            if tokens[i].startswith("##") and tokens[i - 1] not in tokenizer.all_special_tokens:
                assert masked[i] == masked[i - 1], (tokens[i - 1 : i + 1], masked[i - 1 : i + 1])


def test_held_out_masking_is_fixed_and_training_masking_is_not(tokenizer) -> None:
    def build() -> MLMTextDataModule:
        module = MLMTextDataModule(
            tokenizer, train_file=str(SAMPLE / "validation.json"), max_seq_length=64, validation_ratio=0.2,
            seed=3,
        )
        module.setup("fit")
        return module

    first, second = build(), build()
    assert first.val_set.rows == second.val_set.rows  # the same texts, masked the same way, every epoch and run
    masked = sum(label != -100 for row in first.val_set.rows for label in row["labels"])
    tokens = sum(len(row["labels"]) - 2 for row in first.val_set.rows)  # less [CLS] and [SEP]
    assert 0.08 < masked / tokens < 0.25  # mlm_probability 0.15
    batch = [first.train_set[i] for i in range(8)]
    one, two = first.collator([dict(b) for b in batch]), first.collator([dict(b) for b in batch])
    assert not torch.equal(one["labels"], two["labels"])  # dynamic masking: a new pattern each time


def test_bad_text_settings_are_clear_errors(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="validation_ratio"):
        MLMTextDataModule(tokenizer, train_file=str(SAMPLE / "validation.json"), validation_ratio=0.0)
    module = MLMTextDataModule(tokenizer, train_file=str(SAMPLE / "validation.json"), fields=["sentence"])
    with pytest.raises(ValueError, match="datamodule.fields"):
        module.setup("fit")
    module = MLMTextDataModule(tokenizer, files=[str(tmp_path / "missing.json")])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        module.setup("fit")


def test_retargeted_callbacks_keep_their_settings() -> None:
    """User callbacks watching the reader's metric are copied onto the MLM metric with every other setting."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from models.mlm import retarget_callbacks

    checkpoint = ModelCheckpoint(dirpath="ckpts", monitor="val_exact_match", mode="max", save_top_k=2,
                                 every_n_train_steps=50, save_on_train_epoch_end=False)  # fmt: skip
    stopping = EarlyStopping(monitor="val_exact_match", mode="max", patience=5, min_delta=0.5,
                             check_on_train_epoch_end=False, strict=False)  # fmt: skip
    monitor = {"metric": "val_mlm_loss", "mode": "min", "filename": "mlm-{step}"}
    new_checkpoint, new_stopping = retarget_callbacks([checkpoint, stopping], monitor)
    assert (new_checkpoint.monitor, new_checkpoint.mode, new_checkpoint.save_top_k) == ("val_mlm_loss", "min", 2)
    assert new_checkpoint._every_n_train_steps == 50 and new_checkpoint._save_on_train_epoch_end is False
    assert (new_stopping.monitor, new_stopping.mode, new_stopping.patience) == ("val_mlm_loss", "min", 5)
    assert new_stopping.min_delta == -0.5  # Lightning stores it signed: an improvement is a decrease here
    assert new_stopping._check_on_train_epoch_end is False and new_stopping.strict is False
