"""Text generation (summarisation): a decoder-only or encoder-decoder HF model, decoded from config, scored by ROUGE.

``architecture``: ``causal`` (``AutoModelForCausalLM``: a Korean GPT), ``seq2seq``
(``AutoModelForSeq2SeqLM``: BART, T5) or ``auto`` (the backbone config's ``is_encoder_decoder``). Weights,
``init_from`` and LoRA come from the same ``build_encoder`` as the reader's and classifier's; optimiser, LR
schedule (``model/scheduler=cosine_warm_restarts`` included) and the evaluation loop from ``models/base.py``.

Validation logs the teacher-forced ``val_loss`` (alone on plain text: ``datamodule=mlm_text
datamodule.mlm=false`` pre-trains the LM) and generates a summary for every example with
``model.generation`` (greedy, beam, top-k, top-p sampling; ``max_new_tokens`` ...), scored by ROUGE-1/2/L F1
(``val_rouge1``, ``val_rouge2``, ``val_rougeL``; models/rouge.py). ``last_predictions`` (``{id: text}``) is
what main.py writes as ``predictions.json`` (validate, predict, and fit's best checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    PretrainedConfig,
)

from core.contracts import EvaluationData
from core.generation import ARCHITECTURES, ensure_pad_token
from models.backbone import Backbone
from models.base import TaskModule
from models.encoder import build_encoder
from models.rouge import ROUGE_TYPES, RougeF1, rouge_f1

MODEL_CLASSES = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}
STRATEGIES = ("greedy", "beam", "top_k", "top_p", "sample")


def resolve_architecture(name: str, config: PretrainedConfig) -> str:
    """``auto``: seq2seq for an encoder-decoder config (BART, T5), causal otherwise (GPT-2, Llama, ...)."""
    if name == "auto":
        return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    if name not in ARCHITECTURES:
        raise ValueError(f"model.architecture={name!r}: choose auto, causal or seq2seq.")
    if (name == "seq2seq") != bool(getattr(config, "is_encoder_decoder", False)):
        kind = "an encoder-decoder" if config.is_encoder_decoder else "a decoder-only"
        raise ValueError(
            f"model.architecture={name} but the backbone ({config.model_type}) is {kind} model: "
            "set model.architecture=auto."
        )
    return name


def decoding_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``model.generation`` as ``GenerationConfig`` arguments; only the strategy's own knobs are passed.

    ``greedy``; ``beam`` (``num_beams`` >= 2, ``length_penalty``, ``early_stopping``); ``top_k`` and ``top_p``
    (sampling with that filter alone); ``sample`` (both filters). Every strategy takes ``max_new_tokens``,
    ``no_repeat_ngram_size`` and ``repetition_penalty``; the sampling ones ``temperature``.
    """
    settings = dict(settings)
    strategy = settings.get("strategy", "greedy")
    if strategy not in STRATEGIES:
        raise ValueError(f"model.generation.strategy={strategy!r} is unknown: choose one of {', '.join(STRATEGIES)}.")
    args: dict[str, Any] = {
        "max_new_tokens": int(settings.get("max_new_tokens", 64)),
        "no_repeat_ngram_size": int(settings.get("no_repeat_ngram_size") or 0),
        "repetition_penalty": float(settings.get("repetition_penalty") or 1.0),
        "do_sample": strategy in ("top_k", "top_p", "sample"),
        "num_beams": 1,
    }
    if args["max_new_tokens"] < 1:
        raise ValueError("model.generation.max_new_tokens must be at least 1.")
    if strategy == "beam":
        beams = int(settings.get("num_beams") or 0)
        if beams < 2:
            raise ValueError(f"model.generation.strategy=beam needs model.generation.num_beams >= 2 (got {beams}).")
        args.update(num_beams=beams, length_penalty=float(settings.get("length_penalty", 1.0)),
                    early_stopping=bool(settings.get("early_stopping", True)))
    if args["do_sample"]:
        temperature = float(settings.get("temperature", 1.0))
        if temperature <= 0:
            raise ValueError("model.generation.temperature must be > 0 (use strategy=greedy for argmax decoding).")
        top_k = int(settings.get("top_k") or 0) if strategy in ("top_k", "sample") else 0  # 0: no top-k filter
        top_p = float(settings.get("top_p", 1.0)) if strategy in ("top_p", "sample") else 1.0
        if strategy == "top_k" and top_k < 1:
            raise ValueError("model.generation.strategy=top_k needs model.generation.top_k >= 1.")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"model.generation.top_p={top_p} must be in (0, 1].")
        args.update(temperature=temperature, top_k=top_k, top_p=top_p)
    return args


def generation_config(settings: Mapping[str, Any], model_config: GenerationConfig, tokenizer: Any) -> GenerationConfig:
    """The model's own generation config (bos/eos/decoder start, BART's forced tokens), our decoding on top."""
    config = GenerationConfig.from_dict(model_config.to_dict())
    # a pretrained model's preferences (bart-large-cnn: 4 beams, min_length 56) give way to model.generation
    config.update(min_length=0, max_length=None, num_beams=1, do_sample=False, top_k=None, top_p=None,
                  temperature=None, length_penalty=1.0, early_stopping=False)
    config.update(**decoding_arguments(settings))
    config.pad_token_id = tokenizer.pad_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    config.validate(strict=True)
    return config


class GeneratedNoRepeatNGram(LogitsProcessor):
    """transformers' no-repeat-n-gram rule over the generated tokens only.

    A decoder-only model's sequence starts with its prompt, and transformers' processor bans every n-gram
    already in the sequence: a summary could then not copy any phrase of its text (ROUGE-L 58.0 -> 53.9 with
    beam search and n=3 on the embedded sample). The summary must not repeat itself; copying is its job.
    """

    def __init__(self, ngram_size: int, prompt_length: int) -> None:
        self.inner = NoRepeatNGramLogitsProcessor(ngram_size)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.inner(input_ids[:, self.prompt_length:], scores)


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value`` (a list of one without DDP): predictions are strings, not tensors."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class Generator(TaskModule):
    """Teacher-forced cross-entropy on the summary tokens; validation generates and scores ROUGE."""

    progress_scores = ROUGE_TYPES

    def __init__(
        self,
        backbone: Backbone,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        architecture: str = "auto",
        generation: Mapping[str, Any] | None = None,
        rouge: Mapping[str, Any] | None = None,
        monitor: Mapping[str, Any] | None = None,
        init_from: str | None = None,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["backbone"])
        self.architecture = resolve_architecture(architecture, backbone.config)
        ensure_pad_token(backbone.tokenizer)
        self.attach(backbone, build_encoder(MODEL_CLASSES[self.architecture], backbone, init_from=init_from, lora=lora))
        self.generation = generation_config(generation or {}, self.hf_model.generation_config, self.tokenizer)
        # a causal model applies no_repeat_ngram_size to what it generates, not to its prompt (see above)
        self.no_repeat_ngram_size = 0
        if self.architecture == "causal":
            self.no_repeat_ngram_size = self.generation.no_repeat_ngram_size or 0
            self.generation.no_repeat_ngram_size = None
        self.rouge = RougeF1(tokenizer=(rouge or {}).get("tokenizer", "whitespace"))
        self.outputs: dict[int, str] = {}
        self.last_predictions: dict[str, str] = {}

    # ------------------------------------------------------------------ steps

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        return self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])

    @torch.no_grad()
    def generate_ids(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The generated token ids (a causal model's prompt cut off; padded with pad after eos)."""
        if self.architecture == "causal":
            inputs, mask = batch["prompt_ids"], batch["prompt_attention_mask"]
        else:
            inputs, mask = batch["input_ids"], batch["attention_mask"]
        processors = LogitsProcessorList()
        if self.no_repeat_ngram_size:
            processors.append(GeneratedNoRepeatNGram(self.no_repeat_ngram_size, inputs.size(1)))
        output = self.hf_model.generate(
            input_ids=inputs, attention_mask=mask, generation_config=self.generation, logits_processor=processors
        )
        return output[:, inputs.size(1):] if self.architecture == "causal" else output

    def generate(self, batch: Mapping[str, torch.Tensor]) -> list[str]:
        """Summaries of a batch with ``model.generation``; a causal model continues its left-padded prompt."""
        output = self.generate_ids(batch)
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> None:
        """Generate for every example; validation also logs the teacher-forced loss and updates ROUGE."""
        if split == "validation":
            self.log("val_loss", self(batch).loss, batch_size=batch["input_ids"].size(0))
            if "index" not in batch:  # plain text (datamodule=mlm_text mlm=false: LM pre-training): nothing to generate
                return
        texts = self.generate(batch)
        self.outputs.update(zip(batch["index"].tolist(), texts, strict=True))
        if split == "validation":
            examples = self.eval_examples("validation")
            self.rouge.update(texts, [examples[i]["summary"] for i in batch["index"].tolist()])

    # ------------------------------------------------------------------ epoch ends

    def eval_examples(self, split: str) -> Any:
        why = "model=generator needs the evaluation examples of a summarization datamodule"
        return self.evaluation_data(EvaluationData, why).eval_examples(split)

    def eval_outputs(self, split: str) -> dict[str, str] | None:
        """``{id: generated text}`` in file order, from every process (validation: None when nothing was
        generated, as in LM pre-training, where the loss is the only score)."""
        if split == "validation" and not self.rouge.update_called:
            return None
        merged: dict[int, str] = {}
        for part in gather_objects(self.outputs):
            merged.update(part)
        self.outputs = {}
        examples = self.eval_examples(split)
        return {examples[i]["id"]: merged[i] for i in sorted(merged)}

    def predictions(self, split: str, outputs: dict[str, str]) -> tuple[Any, Any]:
        return outputs, None

    def scores(self, split: str, outputs: dict[str, str]) -> dict[str, Any]:
        """ROUGE-1/2/L F1 of the validation summaries (test predictions are not scored here: task=score)."""
        if split != "validation":
            return {}
        scores = {name: value.float() for name, value in self.rouge.compute().items()}
        self.rouge.reset()
        return {**scores, "examples": float(len(outputs))}

    def prediction_table(self, ids: list[str]) -> tuple[list[str], list[list[Any]]]:
        """W&B's validation table (callbacks/wandb_callbacks.py): text, generated and gold summary, ROUGE per row."""
        examples = {ex["id"]: ex for ex in self.eval_examples("validation")}
        tokenizer = (self.hparams.rouge or {}).get("tokenizer", "whitespace")
        rows = []
        for record in ids:
            example, prediction = examples[record], self.last_predictions[record]
            scores = rouge_f1([prediction], [example["summary"] or ""], tokenizer)
            rows.append([self.current_epoch, self.global_step, record, example["text"], prediction,
                         example["summary"], *(scores[name] for name in ROUGE_TYPES)])
        return ["epoch", "global_step", "id", "text", "prediction", "summary", *ROUGE_TYPES], rows
