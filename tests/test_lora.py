"""LoRA (peft): only adapters + the QA head train, checkpoints hold adapters, the merged export is exact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")
# peft reads a transformers attribute that transformers 5 renamed; harmless
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

from lightning.pytorch import Trainer  # noqa: E402
from transformers import AutoModelForQuestionAnswering  # noqa: E402

from datamodules.mrc import MRCDataModule  # noqa: E402
from models.backbone import pretrained_backbone  # noqa: E402
from models.lora import apply_lora, head_modules  # noqa: E402
from models.reader import ExtractiveReader  # noqa: E402
from tests.conftest import SAMPLE, TINY_RUN, read_json, run_main  # noqa: E402

LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.dropout=0.0", "model.optimizer.lr=3e-3"]
OPTIM = {"_target_": "torch.optim.AdamW", "lr": 3e-3, "weight_decay": 0.01}
SCHEDULE = {"_target_": "transformers.get_linear_schedule_with_warmup", "warmup_ratio": 0.0}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("lora")
    run_main(*TINY_RUN, *LORA, run_dir=base / "run", cache_dir=base / "cache")
    return base / "run"


def lora_settings(**changes: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "modules_to_save": None,
        "target_modules": ["query", "key", "value", "Wqkv"],
    }
    return {**settings, **changes}


def reader_from(run_dir: Path, lora: dict[str, object]) -> ExtractiveReader:
    backbone = pretrained_backbone(str(run_dir / "backbone"))
    return ExtractiveReader(backbone=backbone, optimizer=OPTIM, scheduler=SCHEDULE, lora=lora)


def test_lora_run_counts_and_checkpoints_adapters(lora_run: Path) -> None:
    metrics = read_json(lora_run / "metrics.json")
    state = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    adapters = {k: v for k, v in state.items() if ".lora_A." in k or ".lora_B." in k}
    head = {k: v for k, v in state.items() if ".modules_to_save." in k}
    assert adapters and head, "the checkpoint holds the adapters and the trainable head copy"
    # what trained is exactly the adapters and the head: nothing of the frozen encoder
    assert metrics["trainable_parameters"] == sum(v.numel() for v in {**adapters, **head}.values())
    assert metrics["trainable_parameters"] < 0.1 * metrics["total_parameters"]
    # LoRA's B matrices start at zero: non-zero ones were trained
    assert all(v.abs().sum() > 0 for k, v in adapters.items() if ".lora_B." in k)
    assert (Path(metrics["adapter"]) / "adapter_config.json").exists()


def test_merged_export_gives_the_adapted_logits(lora_run: Path) -> None:
    metrics = read_json(lora_run / "metrics.json")
    checkpoint = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    adapted = reader_from(lora_run, checkpoint["hyper_parameters"]["lora"])
    adapted.load_state_dict(checkpoint["state_dict"])
    merged = AutoModelForQuestionAnswering.from_pretrained(metrics["merged_model"])
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tokenizer = adapted.tokenizer
    batch = tokenizer(["서울의 인구는?", "강의 길이는?"], ["서울의 인구는 천만 명이다.", "그 강은 342킬로미터이다."],
                      padding=True, return_tensors="pt", return_token_type_ids=False)
    adapted.eval()
    merged.eval()
    with torch.no_grad():
        expected = adapted.encoder(**batch)
        got = merged(**batch)
    assert torch.allclose(expected.start_logits, got.start_logits, atol=1e-5)
    assert torch.allclose(expected.end_logits, got.end_logits, atol=1e-5)


def test_hf_export_merges_lora_or_keeps_the_adapter(lora_run: Path, tmp_path: Path) -> None:
    """The fit's ``hf_model/`` is the merged model (the same tensors as ``merged/``); ``merge_lora=False`` writes
    the base weights plus ``adapter/``, which peft puts back together into the adapted model's logits."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from models.export import export_hf

    metrics = read_json(lora_run / "metrics.json")
    exported, merged = load_file(Path(metrics["hf_model"]) / "model.safetensors"), load_file(
        Path(metrics["merged_model"]) / "model.safetensors")
    assert exported.keys() == merged.keys() and all(torch.equal(exported[k], merged[k]) for k in merged)
    assert read_json(Path(metrics["hf_model"]) / "export.json")["lora"] == "merged"
    checkpoint = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    adapted = reader_from(lora_run, checkpoint["hyper_parameters"]["lora"])
    adapted.load_state_dict(checkpoint["state_dict"])
    export_hf(adapted, tmp_path / "unmerged", merge_lora=False)
    base = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "unmerged")
    assert not any("lora" in name for name, _ in base.named_parameters())
    rebuilt = PeftModel.from_pretrained(base, tmp_path / "unmerged" / "adapter").eval()
    batch = adapted.tokenizer(["강의 길이는?"], ["그 강은 342킬로미터이다."], return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        assert torch.allclose(adapted.eval().encoder(**batch).start_logits, rebuilt(**batch).start_logits, atol=1e-5)


def test_training_changes_adapters_and_head_only(lora_run: Path, tmp_path: Path) -> None:
    reader = reader_from(lora_run, lora_settings())
    before = {k: v.clone() for k, v in reader.encoder.state_dict().items()}
    datamodule = MRCDataModule(
        tokenizer=reader.tokenizer, train_file=str(SAMPLE / "train.json"),
        validation_file=str(SAMPLE / "validation.json"), max_train_examples=16, max_eval_examples=4,
        batch_size=8, max_seq_length=128, doc_stride=64, cache_dir=str(tmp_path),
    )
    trainer = Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, accelerator="cpu",
    )
    trainer.fit(reader, datamodule=datamodule)
    optimised = sum(p.numel() for group in trainer.optimizers[0].param_groups for p in group["params"])
    assert optimised == sum(p.numel() for p in reader.encoder.parameters() if p.requires_grad)
    after = reader.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k or ".modules_to_save." in k for k in changed), sorted(changed)
    assert any(".lora_B." in k for k in changed) and any(".modules_to_save." in k for k in changed)


def test_all_linear_adapts_the_encoder_not_the_head(lora_run: Path) -> None:
    config = pretrained_backbone(str(lora_run / "backbone")).config
    settings = lora_settings(target_modules="all-linear")
    model = apply_lora(AutoModelForQuestionAnswering.from_config(config), settings)
    adapted = {name.split(".lora_A")[0] for name, _ in model.named_parameters() if ".lora_A." in name}
    assert adapted and all(".model.layers." in name for name in adapted)
    heads = head_modules(AutoModelForQuestionAnswering.from_config(config))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and ".modules_to_save." in n}
    assert {n.split(".")[2] for n in trainable} == set(heads)


def test_bad_lora_settings_are_clear_errors(lora_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = pretrained_backbone(str(lora_run / "backbone")).config
    with pytest.raises(ValueError, match="Wqkv"):  # the message lists the layer names that would fit
        apply_lora(AutoModelForQuestionAnswering.from_config(config), lora_settings(target_modules=["q_lin"]))
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(ValueError, match=r"pip install"):
        apply_lora(AutoModelForQuestionAnswering.from_config(config), lora_settings())


def test_lora_checkpoint_needs_the_lora_setting(lora_run: Path, tmp_path: Path) -> None:
    metrics = read_json(lora_run / "metrics.json")
    result = run_main(
        "task=validate", f"ckpt_path={metrics['best_checkpoint']}", "print_config=false",
        "backbone=local", f"backbone.name_or_path={lora_run / 'backbone'}", "datamodule.max_eval_examples=4",
        run_dir=tmp_path / "validate", cache_dir=tmp_path / "cache", check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "model.lora.enabled=true" in result.stderr


def test_masked_lm_exports_its_adapters_merged(lora_run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM

    from models.mlm import MaskedLanguageModel

    monitor = {"metric": "val_mlm_loss", "mode": "min"}
    module = MaskedLanguageModel(
        backbone=pretrained_backbone(str(lora_run / "backbone")), optimizer=OPTIM, scheduler=SCHEDULE,
        monitor=monitor, lora=lora_settings(modules_to_save=[]),
    )
    trainable = {n for n, p in module.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)  # adapters only: the decoder stays tied
    with torch.no_grad():  # stand-in for training: B = 0 would make the merge trivially exact
        for name, param in module.encoder.named_parameters():
            if ".lora_B." in name:
                param.normal_()
    exported = module.export_artifacts(tmp_path)
    merged = AutoModelForMaskedLM.from_pretrained(exported["mlm_backbone"]).eval()
    ids = module.tokenizer(["서울의 인구는 천만 명이다."], return_tensors="pt", return_token_type_ids=False)
    module.encoder.eval()
    with torch.no_grad():
        assert torch.allclose(module.encoder(**ids).logits, merged(**ids).logits, atol=1e-4)
    assert exported["trainable_parameters"] == sum(p.numel() for p in module.encoder.parameters() if p.requires_grad)
