"""The evaluation loader (``eval_batch_size``, longest windows first, padded per batch) changes how fast
``task=validate`` / ``task=predict`` run, never what they answer: a real Lightning validation over the sorted
loader gives the answers of ``utils_qa.postprocess_qa_predictions`` (bench/_utils_qa.py, the reference) on the
same model's logits over the windows in dataset order, padded to ``max_seq_length`` as run_qa pads them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset

from bench._utils_qa import postprocess_qa_predictions
from datamodules.mrc_features import collate_qa
from tasks.build import build_run
from tasks.runner import compose_config
from tests.conftest import TINY_RUN

MAX_SEQ = 96
N_BEST = MAX_SEQ  # every context token is a candidate on both sides: the reference's top-k then loses nothing


def reader_run(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_config(
        [
            "+experiment=mrc_curriculum", "task=validate", *TINY_RUN, "logger=none",
            f"paths.cache_dir={tmp_path / 'cache'}", f"datamodule.max_seq_length={MAX_SEQ}",
            "datamodule.doc_stride=32", "datamodule.max_eval_examples=24", f"model.n_best_size={N_BEST}",
            "~callbacks.progress_bar", *overrides,
        ],
        tmp_path / "run",
    )  # fmt: skip
    return build_run(cfg)


def reference_answers(run: dict) -> dict[str, str]:
    """utils_qa on the model's logits over every window in dataset order, each padded to max_seq_length."""
    model, datamodule = run["model"], run["datamodule"]
    eval_set = datamodule.eval_set("validation")
    rows = [eval_set.features[i] for i in range(len(eval_set.features))]
    batch = collate_qa(rows, datamodule.tokenizer.pad_token_id, pad_to_multiple_of=MAX_SEQ)
    assert batch["input_ids"].shape[1] == MAX_SEQ
    model.eval()
    with torch.inference_mode():
        output = model.encoder(**model.encoder_inputs(batch))
    examples = Dataset.from_list([{"id": ex["id"], "context": ex["context"]} for ex in eval_set.examples])
    features = [
        {
            "example_id": eval_set.examples[example]["id"],
            "offset_mapping": [None if start < 0 else (start, end) for start, end in offsets],
        }
        for example, offsets in zip(eval_set.example_index, eval_set.offset_mapping, strict=True)
    ]
    logits = (output.start_logits.numpy(), output.end_logits.numpy())
    answers, _ = postprocess_qa_predictions(
        examples, features, logits, n_best_size=N_BEST, max_answer_length=model.hparams.max_answer_length
    )
    return dict(answers)


def test_sorted_eval_batches_answer_as_utils_qa_does(tmp_path: Path) -> None:
    run = reader_run(tmp_path)
    datamodule, trainer = run["datamodule"], run["trainer"]
    trainer.validate(run["model"], datamodule=datamodule, verbose=False)
    loader = datamodule.val_dataloader()
    assert loader.batch_size == 2 * datamodule.batch_size  # eval_batch_size: null
    lengths = datamodule.eval_set("validation").features.lengths()
    order = list(loader.sampler)
    assert sorted(order) == list(range(len(lengths))) and len(set(lengths)) > 1  # every window once, several lengths
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    ours = dict(run["model"].last_predictions)
    assert len(ours) == len(datamodule.eval_examples("validation")) == 24
    assert ours == reference_answers(run)


@pytest.mark.parametrize("limit", [2, 0.5])
def test_a_partial_loop_keeps_dataset_order(tmp_path: Path, limit: float) -> None:
    run = reader_run(tmp_path, f"trainer.limit_val_batches={limit}", "datamodule.eval_batch_size=5")
    datamodule = run["datamodule"]
    datamodule.trainer = run["trainer"]
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    assert loader.batch_size == 5
    assert list(loader.sampler) == list(range(len(datamodule.eval_set("validation").features)))
