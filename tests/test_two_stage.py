"""Two-stage fine-tuning: the stages mechanism of main.py and ``model.init_from`` (weights only)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForMaskedLM, AutoModelForQuestionAnswering

from datamodules.mrc_formats import load_mrc_examples, to_squad_json
from models.backbone import Backbone, tiny_backbone, train_tokenizer
from models.encoder import build_encoder
from tests.conftest import ROOT, SAMPLE, TINY_RUN, read_json, run_main

TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
               "global_attn_every_n_layers": 1}


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage 1 on a 16-question slice (the 'external' set), stage 2 at lr 0: its weights stay stage 1's."""
    base = tmp_path_factory.mktemp("two_stage")
    external = base / "external.json"
    slice_ = to_squad_json(load_mrc_examples(SAMPLE / "train.json")[-16:])
    external.write_text(json.dumps(slice_, ensure_ascii=False), encoding="utf-8")
    run_main(
        "+experiment=mrc_two_stage", *TINY_RUN, f"stage1.train_file={external}", "stage2.lr=0",
        run_dir=base / "run", cache_dir=base / "cache",
    )
    return base / "run"


def test_two_stages_run_in_one_command(two_stage_run: Path) -> None:
    metrics = read_json(two_stage_run / "metrics.json")
    stages = metrics["stages"]
    assert list(stages) == ["stage1", "stage2"]
    for name in stages:
        assert read_json(two_stage_run / name / "metrics.json") == stages[name]
        assert (two_stage_run / name / "config.yaml").exists()
        assert (two_stage_run / name / "csv" / "metrics.csv").exists()
    # the run's metrics are the final stage's
    for key in ("exact_match", "f1", "best_checkpoint", "global_step"):
        assert metrics[key] == stages["stage2"][key]
    first = OmegaConf.load(two_stage_run / "stage1" / "config.yaml")
    second = OmegaConf.load(two_stage_run / "stage2" / "config.yaml")
    assert first.datamodule.train_file.endswith("external.json")
    assert Path(second.datamodule.train_file) == SAMPLE / "train.json"
    assert first.model.optimizer.lr == 3e-3 and second.model.optimizer.lr == 0
    # stage 2 starts from stage 1's best checkpoint, with stage 1's tokenizer
    assert second.model.init_from == stages["stage1"]["best_checkpoint"]
    assert Path(second.backbone.name_or_path) == two_stage_run / "stage1" / "backbone"
    assert stages["stage1"]["global_step"] < stages["stage2"]["global_step"]  # 16 vs 48 questions


def test_second_stage_starts_from_first_stage_weights(two_stage_run: Path) -> None:
    # at lr 0 stage 2 cannot move: the same answers and logits prove it loaded stage 1's weights
    first = read_json(two_stage_run / "stage1" / "nbest_predictions.json")
    second = read_json(two_stage_run / "stage2" / "nbest_predictions.json")
    assert first == second
    assert "model.init_from=" in (two_stage_run / "main.log").read_text(encoding="utf-8")


def test_experiment_defaults() -> None:
    from hydra import compose, initialize_config_dir

    from core.config import register_resolvers

    register_resolvers()

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=mrc_two_stage"])
    assert cfg.stage1.epochs == 1 and cfg.stage2.lr == 1e-5
    assert Path(cfg.stage1.train_file) == SAMPLE / "train.json"
    assert [s.name for s in cfg.stages] == ["stage1", "stage2"]


@pytest.mark.parametrize(
    ("override", "message"),
    [('stages.1.overrides=["model.optimizer.nope=1"]', "stage stage2"), ("stages.1.name=stage1", "unique")],
)
def test_bad_stages_fail_before_training(override: str, message: str, tmp_path: Path) -> None:
    result = run_main(
        "+experiment=mrc_two_stage", "print_config=false", override, run_dir=tmp_path / "run", check=False
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "run" / "stage1").exists()


# ----------------------------------------------------------------------------- model.init_from


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return tiny_backbone(
        [SAMPLE / "train.json"], ["context", "question"], "modernbert", TINY_CONFIG,
        {"vocab_size": 800}, cache_dir=tmp_path_factory.mktemp("cache"),
    )


def fake_checkpoint(path: Path, model: torch.nn.Module, prefix: str = "encoder.") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {prefix + k: v for k, v in model.state_dict().items()}}, path)
    return path


def test_init_from_checkpoint_loads_encoder_and_leaves_new_head(
    backbone: Backbone, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mlm = AutoModelForMaskedLM.from_config(backbone.config)
    ckpt = fake_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt", mlm)
    backbone.save(tmp_path / "run" / "backbone")  # same tokenizer: accepted
    with caplog.at_level(logging.INFO, logger="models.encoder"):
        reader = build_encoder(AutoModelForQuestionAnswering, backbone, init_from=str(ckpt))
    mlm_state, reader_state = mlm.state_dict(), reader.state_dict()
    encoder_keys = [k for k in reader_state if k.startswith("model.")]
    assert encoder_keys and all(torch.equal(reader_state[k], mlm_state[k]) for k in encoder_keys)
    assert "classifier.weight" in caplog.text and "decoder" in caplog.text  # new head, unused MLM decoder
    assert reader.training  # Lightning keeps a module's mode: it must start in train mode


def test_init_from_pretrained_directory(backbone: Backbone, tmp_path: Path) -> None:
    mlm = AutoModelForMaskedLM.from_config(backbone.config)
    mlm.save_pretrained(tmp_path / "mlm")
    backbone.tokenizer.save_pretrained(tmp_path / "mlm")
    reader = build_encoder(AutoModelForQuestionAnswering, backbone, init_from=str(tmp_path / "mlm"))
    key = "model.embeddings.tok_embeddings.weight"
    assert torch.equal(reader.state_dict()[key], mlm.state_dict()[key]) and reader.training


def test_init_from_refuses_what_does_not_fit(backbone: Backbone, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.init_from"):
        build_encoder(AutoModelForQuestionAnswering, backbone, init_from=str(tmp_path / "missing.ckpt"))
    (tmp_path / "notes.ckpt").write_text("not a checkpoint", encoding="utf-8")
    with pytest.raises(ValueError, match="not a readable Lightning checkpoint"):
        build_encoder(AutoModelForQuestionAnswering, backbone, init_from=str(tmp_path / "notes.ckpt"))
    # another encoder shape
    wider = AutoModelForQuestionAnswering.from_config(backbone.config.__class__(**{
        **backbone.config.to_dict(), "hidden_size": 64, "intermediate_size": 96}))
    ckpt = fake_checkpoint(tmp_path / "wide" / "checkpoints" / "x.ckpt", wider)
    with pytest.raises(ValueError, match="does not fit this encoder"):
        build_encoder(AutoModelForQuestionAnswering, backbone, init_from=str(ckpt))
    # trained with another tokenizer (the run's backbone/ beside its checkpoints says which)
    model = AutoModelForQuestionAnswering.from_config(backbone.config)
    ckpt = fake_checkpoint(tmp_path / "other" / "checkpoints" / "x.ckpt", model)
    other = train_tokenizer(["전혀 다른 말뭉치로 학습한 토크나이저", "다른 어휘"] * 5, vocab_size=200, min_frequency=1)
    other.save_pretrained(tmp_path / "other" / "backbone")
    with pytest.raises(ValueError, match="backbone=local backbone.name_or_path="):
        build_encoder(AutoModelForQuestionAnswering, backbone, init_from=str(ckpt))
    # LoRA checkpoints hold adapters on a frozen encoder: the merged export is the way
    ckpt = fake_checkpoint(tmp_path / "lora.ckpt", model, prefix="encoder.base_model.model.")
    with pytest.raises(ValueError, match="merged"):
        build_encoder(AutoModelForQuestionAnswering, backbone, init_from=str(ckpt))
