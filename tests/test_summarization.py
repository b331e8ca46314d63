"""Summarisation (model=generator, datamodule=summarization): Korean ROUGE, prompt masking, decoding, LoRA runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, NoRepeatNGramLogitsProcessor

from core.errors import DataFormatError
from datamodules.summarization import SummarizationDataModule
from models.backbone import Backbone, tiny_backbone
from models.generator import GeneratedNoRepeatNGram, Generator, decoding_arguments, generation_config
from models.rouge import KiwiTokenizer, WhitespaceTokenizer, rouge_f1, rouge_tokenizer
from tests.conftest import ROOT, read_json
from tests.test_wandb import offline_run, wandb_dirs  # noqa: F401 - wandb_dirs is a fixture

pytest.importorskip("rouge_score")
# peft reads a transformers attribute that transformers 5 renamed; harmless
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False:UserWarning"),  # peft on GPT-2's Conv1D
]

SAMPLE = ROOT / "data" / "summarization_sample"
TINY_GPT = {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_inner": 64, "n_positions": 256}
OPTIM = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
SCHEDULE = {"_target_": "models.optim.no_schedule"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------- ROUGE


def test_rouge_keeps_hangul_where_rouge_scores_default_drops_it() -> None:
    from rouge_score.rouge_scorer import RougeScorer

    summary, other = "서울시, 내년 청년 주거 지원 예산 30% 확대", "한빛전자 영업이익 30% 감소"
    default = RougeScorer(["rouge1"])
    words = "서울시 청년 주거 지원 예산 확대"
    assert default.score(words, words)["rouge1"].fmeasure == 0.0  # no tokens left
    assert default.score(summary, other)["rouge1"].fmeasure == 1.0  # only the number is seen
    assert rouge_f1([summary], [summary]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    # "30" is the one word shared: precision 1/4, recall 1/8
    assert rouge_f1([other], [summary])["rouge1"] == pytest.approx(100 * 2 * (1 / 4 * 1 / 8) / (1 / 4 + 1 / 8))
    # by hand: 2 of 3 words shared, no shared bigram, LCS of 2 words
    scores = rouge_f1(["나는 빵을 먹었다"], ["나는 밥을 먹었다"])
    assert scores["rouge1"] == pytest.approx(200 / 3) and scores["rouge2"] == 0.0
    assert scores["rougeL"] == pytest.approx(200 / 3)


def test_rouge_equals_torchmetrics_rouge_with_the_same_tokens() -> None:
    """An independent implementation (torchmetrics' ROUGEScore) agrees pair by pair, averaged."""
    from torchmetrics.text.rouge import ROUGEScore

    references = [r["summary"] for r in read_jsonl(SAMPLE / "validation.jsonl")[:20]]
    # predictions that share some words and word order: every third word dropped, some swapped
    predictions = [" ".join(w for i, w in enumerate(r.split()[::-1] if k % 2 else r.split()) if i % 3)
                   for k, r in enumerate(references)]
    reference = ROUGEScore(tokenizer=WhitespaceTokenizer().tokenize, normalizer=lambda s: s,
                           rouge_keys=("rouge1", "rouge2", "rougeL"))(predictions, references)
    ours = rouge_f1(predictions, references)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert ours[name] == pytest.approx(100 * float(reference[f"{name}_fmeasure"]), abs=1e-4)
    assert 0 < ours["rouge2"] < ours["rouge1"] < 100


def test_kiwi_rouge_counts_morphemes() -> None:
    """Particles split off: 학교에서 / 학교가 share the stem 학교 for kiwi, nothing for whitespace."""
    assert KiwiTokenizer().tokenize("학교에서 밥을 먹었다.")[:2] == ["학교", "에서"]
    assert rouge_f1(["학교에서"], ["학교가"], "whitespace")["rouge1"] == 0.0
    assert rouge_f1(["학교에서"], ["학교가"], "kiwi")["rouge1"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="model.rouge.tokenizer"):
        rouge_tokenizer("mecab")


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    """backbone=tiny_gpt's tokenizer (trained on the sample) and a 1-layer GPT-2 config."""
    from omegaconf import OmegaConf

    tokenizer = {**OmegaConf.to_container(OmegaConf.load(ROOT / "conf/backbone/tiny_gpt.yaml").tokenizer),
                 "vocab_size": 800}
    return tiny_backbone([SAMPLE / "train.jsonl"], ["text", "summary"], "gpt2", TINY_GPT, tokenizer,
                         cache_dir=tmp_path_factory.mktemp("cache"))


def datamodule(backbone: Backbone, **changes: object) -> SummarizationDataModule:
    settings = {"train_file": str(SAMPLE / "train.jsonl"), "validation_file": str(SAMPLE / "validation.jsonl"),
                "test_file": str(SAMPLE / "test.jsonl"), "architecture": "causal", "max_train_examples": 16,
                "max_eval_examples": 6, "batch_size": 4, "eval_batch_size": 3, **changes}
    dm = SummarizationDataModule(backbone.tokenizer, **settings)
    dm.setup("fit")
    return dm


def test_prompt_is_masked_out_of_the_loss_and_the_summary_decodes_back(backbone: Backbone) -> None:
    tok = backbone.tokenizer
    dm = datamodule(backbone, max_source_length=12)
    examples = dm.load("train")[:16]
    for example, row in zip(examples, dm.train_features, strict=True):
        ids, labels, prompt = row["input_ids"], row["labels"], row["prompt_ids"]
        assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [-100] * len(prompt)
        learnt = labels[len(prompt):]
        assert -100 not in learnt and learnt[-1] == tok.eos_token_id
        assert tok.decode(learnt, skip_special_tokens=True) == example["summary"]  # lossless tokenizer
        assert prompt[0] == tok.bos_token_id and tok.decode(prompt).endswith("요약:")
        # the text is cut to max_source_length tokens; the instruction is kept whole
        assert len(prompt) == 1 + 12 + len(tok("\n요약:", add_special_tokens=False)["input_ids"])
    cut = datamodule(backbone, max_target_length=3).train_features[0]["labels"]
    assert len([t for t in cut if t != -100]) == 4  # 3 summary tokens + eos


def test_batches_pad_sequences_right_and_prompts_left(backbone: Backbone) -> None:
    dm = datamodule(backbone)
    batch = next(iter(dm.val_dataloader()))
    pad = backbone.tokenizer.pad_token_id
    assert (batch["prompt_ids"][:, -1] != pad).all() and (batch["prompt_attention_mask"][:, -1] == 1).all()
    assert (batch["attention_mask"][:, 0] == 1).all()
    lengths = batch["attention_mask"].sum(1)
    for i, n in enumerate(lengths.tolist()):
        assert (batch["labels"][i, n:] == -100).all() and (batch["input_ids"][i, n:] == pad).all()


def test_csv_json_and_jsonl_read_the_same_and_test_records_need_no_summary(backbone: Backbone, tmp_path: Path) -> None:
    rows = read_jsonl(SAMPLE / "train.jsonl")[:5]
    with (tmp_path / "pairs.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "kind", "text", "summary"])
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "pairs.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    for name in ("pairs.csv", "pairs.json"):
        dm = SummarizationDataModule(backbone.tokenizer, train_file=str(tmp_path / name), architecture="causal")
        assert dm.load("train") == [{"id": r["id"], "text": r["text"], "summary": r["summary"]} for r in rows]
    dm = datamodule(backbone)
    dm.setup("predict")
    assert [ex["summary"] for ex in dm.eval_examples("test")] == [None] * 6


def test_a_record_without_summary_names_file_record_and_key(backbone: Backbone, tmp_path: Path) -> None:
    rows = read_jsonl(SAMPLE / "train.jsonl")[:3]
    del rows[1]["summary"]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataFormatError) as error:
        SummarizationDataModule(backbone.tokenizer, train_file=str(path)).load("train")
    message = str(error.value)
    assert str(path) in message and "train-0001" in message and "datamodule.summary_field" in message


def test_seq2seq_labels_are_the_tokenizers_target(backbone: Backbone) -> None:
    tok = backbone.tokenizer
    row = datamodule(backbone, architecture="seq2seq", max_source_length=20).train_features[0]
    assert len(row["input_ids"]) == 20 and row["input_ids"][0] == tok.cls_token_id
    assert row["labels"][0] == tok.cls_token_id and row["labels"][-1] == tok.sep_token_id  # BART's <s> ... </s>
    assert "prompt_ids" not in row


# ----------------------------------------------------------------------------- decoding


def test_decoding_settings_map_to_generation_config() -> None:
    assert decoding_arguments({"strategy": "greedy"})["do_sample"] is False
    beam = decoding_arguments({"strategy": "beam", "num_beams": 5, "length_penalty": 0.6, "no_repeat_ngram_size": 3})
    assert (beam["num_beams"], beam["length_penalty"], beam["no_repeat_ngram_size"]) == (5, 0.6, 3)
    top_p = decoding_arguments({"strategy": "top_p", "top_p": 0.8, "top_k": 40, "temperature": 0.7})
    assert (top_p["do_sample"], top_p["top_p"], top_p["top_k"], top_p["temperature"]) == (True, 0.8, 0, 0.7)
    assert decoding_arguments({"strategy": "top_k", "top_k": 40, "top_p": 0.5})["top_p"] == 1.0
    for bad, key in (({"strategy": "beam", "num_beams": 1}, "num_beams"), ({"strategy": "nucleus"}, "strategy"),
                     ({"strategy": "top_p", "temperature": 0}, "temperature")):
        with pytest.raises(ValueError, match=key):
            decoding_arguments(bad)


@pytest.fixture(scope="module")
def prompts(backbone: Backbone) -> dict[str, torch.Tensor]:
    return next(iter(datamodule(backbone).val_dataloader()))


def generator(backbone: Backbone, **generation: object) -> Generator:
    torch.manual_seed(0)
    model = Generator(backbone, OPTIM, SCHEDULE, generation={"max_new_tokens": 6, **generation})
    return model.eval()


def test_greedy_is_the_argmax_loop_and_top_k_1_sampling_equals_it(backbone: Backbone, prompts: dict) -> None:
    model = generator(backbone, strategy="greedy")
    with torch.no_grad():
        ids, mask = prompts["prompt_ids"], prompts["prompt_attention_mask"]
        out = model.hf_model.generate(input_ids=ids, attention_mask=mask, generation_config=model.generation)
        # reference: feed the whole sequence each step, take the argmax (no cache, no generation utilities)
        manual = ids
        for _ in range(6):
            positions = (torch.cumsum(mask, 1) - 1).clamp(min=0)
            logits = model.hf_model(input_ids=manual, attention_mask=mask, position_ids=positions).logits[:, -1]
            manual = torch.cat([manual, logits.argmax(-1, keepdim=True)], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    eos = backbone.tokenizer.eos_token_id
    for row, ref in zip(out[:, ids.size(1):].tolist(), manual[:, ids.size(1):].tolist(), strict=True):
        cut = ref.index(eos) + 1 if eos in ref else len(ref)
        assert row[:cut] == ref[:cut]
    sampled = generator(backbone, strategy="top_k", top_k=1, temperature=0.5)
    assert sampled.generate(prompts) == model.generate(prompts)


def test_no_repeat_ngram_and_max_new_tokens_hold(backbone: Backbone, prompts: dict) -> None:
    model = generator(backbone, strategy="beam", num_beams=3, no_repeat_ngram_size=1, max_new_tokens=5)
    out = model.generate_ids(prompts)
    assert 1 <= out.size(1) <= 5
    eos, pad = backbone.tokenizer.eos_token_id, backbone.tokenizer.pad_token_id
    for row in out.tolist():  # n=1: no token twice in what was generated (before eos and its padding)
        ids = row[: row.index(eos)] if eos in row else row
        assert len(set(ids)) == len(ids) and pad not in ids


def test_no_repeat_ngram_lets_a_summary_copy_its_prompt() -> None:
    """transformers' rule bans the prompt's trigram a b c after a b; ours only bans repeats of the summary."""
    prompt, generated = [7, 8, 9, 4], [7, 8]
    ids = torch.tensor([prompt + generated])
    scores = torch.zeros(1, 12)
    assert NoRepeatNGramLogitsProcessor(3)(ids, scores.clone())[0, 9] == float("-inf")
    ours = GeneratedNoRepeatNGram(3, len(prompt))
    assert ours(ids, scores.clone())[0, 9] == 0.0
    again = torch.tensor([prompt + [7, 8, 9, 7, 8]])  # the summary's own trigram 7 8 9 is banned
    assert ours(again, scores.clone())[0, 9] == float("-inf")


def test_pretrained_generation_preferences_give_way_to_the_config(backbone: Backbone) -> None:
    hf = AutoModelForCausalLM.from_config(backbone.config)
    hf.generation_config.num_beams, hf.generation_config.min_length = 4, 30  # as bart-large-cnn ships
    config = generation_config({"strategy": "greedy", "max_new_tokens": 7}, hf.generation_config, backbone.tokenizer)
    assert (config.num_beams, config.min_length, config.max_new_tokens, config.do_sample) == (1, 0, 7, False)


# ----------------------------------------------------------------------------- runs of main.py (in-process)


TINY_LOOP = [
    "print_config=false", "logger=csv", "~callbacks.progress_bar", "trainer.log_every_n_steps=1",
    "base.epochs=1", "trainer.max_epochs=1", "datamodule.batch_size=8",
    "datamodule.max_train_examples=32", "datamodule.max_eval_examples=8",
    "model.generation.max_new_tokens=8", "model.generation.num_beams=2", "model.scheduler.T_0=2",
]
TINY_GPT_RUN = TINY_LOOP + [f"backbone.config.{k}={v}" for k, v in TINY_GPT.items()] + [
    "backbone.tokenizer.vocab_size=800"
]


def run_in_process(overrides: list[str], run_dir: Path) -> dict:
    """``python main.py <overrides>`` without a new process (stages compose through Hydra's global state)."""
    from hydra import initialize_config_dir

    from tasks.runner import compose_config, run_task

    cfg = compose_config(overrides, run_dir)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return run_task(cfg)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``+experiment=summarization_lora`` at tiny size: LM pre-training stage, then the LoRA stage."""
    base = tmp_path_factory.mktemp("summarization")
    run_in_process(["+experiment=summarization_lora", *TINY_GPT_RUN, f"paths.cache_dir={base / 'cache'}"],
                   base / "run")
    return base / "run"


def test_experiment_pretrains_then_trains_lora_and_scores_rouge(lora_run: Path) -> None:
    metrics = read_json(lora_run / "metrics.json")
    assert list(metrics["stages"]) == ["base", "lora"]
    assert {"rouge1", "rouge2", "rougeL"} <= set(metrics) and metrics["examples"] == 8
    assert all(0.0 <= metrics[k] <= 100.0 for k in ("rouge1", "rouge2", "rougeL"))
    assert "rouge1" not in metrics["stages"]["base"] and metrics["stages"]["base"]["loss"] > 0
    assert metrics["trainable_parameters"] < 0.5 * metrics["total_parameters"]
    assert (Path(metrics["adapter"]) / "adapter_config.json").exists()
    predictions = read_json(lora_run / "lora" / "predictions.json")
    validation = read_jsonl(SAMPLE / "validation.jsonl")[:8]
    assert list(predictions) == [r["id"] for r in validation]
    # the recomputed ROUGE of the written predictions is the logged one
    recomputed = rouge_f1([predictions[r["id"]] for r in validation], [r["summary"] for r in validation])
    assert recomputed["rougeL"] == pytest.approx(metrics["rougeL"], abs=1e-3)
    state = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert any(".lora_A." in k for k in state["state_dict"])
    # the lora stage's schedule: a linear warmup, then cosine cycles of T_0 steps (SequentialLR's state)
    assert state["lr_schedulers"][0]["_schedulers"][1]["T_0"] == 2


def test_predict_writes_generated_texts_for_the_test_file(lora_run: Path, tmp_path: Path) -> None:
    stage = lora_run / "lora"
    metrics = read_json(stage / "metrics.json")
    run_in_process([
        "+experiment=summarization_lora", "stages=null", *TINY_LOOP, "task=predict",
        f"ckpt_path={metrics['best_checkpoint']}", "backbone=local", f"backbone.name_or_path={stage / 'backbone'}",
        f"datamodule.test_file={SAMPLE / 'test.jsonl'}", "model.generation.strategy=top_p",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ], tmp_path / "predict")
    predictions = read_json(tmp_path / "predict" / "predictions.json")
    assert list(predictions) == [r["id"] for r in read_jsonl(SAMPLE / "test.jsonl")[:8]]
    assert all(isinstance(text, str) for text in predictions.values())


def test_merged_export_loads_as_a_pretrained_model_and_generates_the_same(lora_run: Path) -> None:
    """backbone=pretrained on the run's merged/ (from_pretrained, no peft) summarises as the LoRA checkpoint does."""
    from models.backbone import pretrained_backbone

    stage = lora_run / "lora"
    metrics = read_json(stage / "metrics.json")
    checkpoint = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    trained = Generator(pretrained_backbone(str(stage / "backbone")), OPTIM, SCHEDULE, generation={"max_new_tokens": 8},
                        lora=checkpoint["hyper_parameters"]["lora"])
    trained.load_state_dict(checkpoint["state_dict"])
    merged = Generator(pretrained_backbone(metrics["merged_model"]), OPTIM, SCHEDULE, generation={"max_new_tokens": 8})
    assert merged.encoder is merged.hf_model  # a plain transformers model, weights from the directory
    dm = SummarizationDataModule(merged.tokenizer, train_file=str(SAMPLE / "train.jsonl"),
                                 validation_file=str(SAMPLE / "validation.jsonl"), architecture="causal",
                                 max_train_examples=4, max_eval_examples=4, max_source_length=192, max_target_length=48)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert merged.eval().generate_ids(batch).tolist() == trained.eval().generate_ids(batch).tolist()


@pytest.mark.usefixtures("wandb_dirs")
def test_wandb_table_shows_texts_summaries_and_rouge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """logger=wandb (offline): the validation table is the generator's own, its ROUGE per row recomputable."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    run_in_process(["+experiment=summarization_lora", "stages=null", *TINY_GPT_RUN, "logger=wandb",
                    "callbacks.wandb_val_predictions.sample_size=3", f"paths.cache_dir={tmp_path / 'cache'}"], run_dir)
    tables = sorted((offline_run(run_dir)["files"] / "media" / "table").glob("val_predictions_*.table.json"))
    table = json.loads(tables[-1].read_text(encoding="utf-8"))
    assert table["columns"] == ["epoch", "global_step", "id", "text", "prediction", "summary", "rouge1", "rouge2", "rougeL"]
    predictions, gold = read_json(run_dir / "predictions.json"), {r["id"]: r for r in read_jsonl(SAMPLE / "validation.jsonl")}
    assert len(table["data"]) == 3
    for row in table["data"]:
        record = dict(zip(table["columns"], row, strict=True))
        assert record["prediction"] == predictions[record["id"]] and record["summary"] == gold[record["id"]]["summary"]
        assert record["rougeL"] == pytest.approx(rouge_f1([record["prediction"]], [record["summary"]])["rougeL"])


def test_seq2seq_bart_fits_and_scores(tmp_path: Path) -> None:
    metrics = run_in_process([
        "model=generator", "datamodule=summarization", "backbone=tiny_bart", *TINY_LOOP[:4],
        "backbone.config.d_model=32", "backbone.config.encoder_layers=1", "backbone.config.decoder_layers=1",
        "backbone.config.encoder_ffn_dim=64", "backbone.config.decoder_ffn_dim=64",
        "backbone.tokenizer.vocab_size=800", "trainer.max_epochs=1", "datamodule.max_train_examples=16",
        "datamodule.max_eval_examples=4", "model.generation.max_new_tokens=6", f"paths.cache_dir={tmp_path / 'c'}",
    ], tmp_path / "run")
    assert metrics["examples"] == 4 and {"rouge1", "rouge2", "rougeL"} <= set(metrics)
    assert len(read_json(tmp_path / "run" / "predictions.json")) == 4
