"""No lost results and safe loading: atomic result files, weights-only checkpoints, no remote code by default.

The end-to-end halves live elsewhere: Ctrl-C / SIGTERM writing ``last.ckpt`` and flushing the CSV logger in
``test_resume.py``; run directories and the checkpoint, pretrained-name and bad-file errors through
``main.py`` in ``test_bad_inputs.py``; retriever indexes loaded with ``allow_pickle=False`` in
``test_retrieval.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from core.errors import DataFormatError
from core.files import write_json
from models.encoder import from_pretrained_weights
from models.safe_loading import existing_checkpoint, load_checkpoint


def test_results_are_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = write_json(tmp_path / "metrics.json", {"exact_match": 50.0})
    with pytest.raises(TypeError):  # not serialisable: nothing is written, the old file stays
        write_json(metrics, {"exact_match": {1, 2}})

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # dies between writing the temp file and the rename
    with pytest.raises(OSError, match="disk full"):
        write_json(metrics, {"exact_match": 99.0})
    monkeypatch.undo()
    assert json.loads(metrics.read_text(encoding="utf-8")) == {"exact_match": 50.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind
    write_json(metrics, {"exact_match": 99.0})
    assert json.loads(metrics.read_text(encoding="utf-8")) == {"exact_match": 99.0}
    assert metrics.stat().st_mode & 0o044  # the umask's permissions, not mkstemp's 0600


class Payload:
    """Not a tensor or a plain value: torch.load(weights_only=True) must refuse to unpickle it."""


def test_checkpoints_load_weights_only(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"lr": 1e-3}}, good)
    assert torch.equal(load_checkpoint(good)["state_dict"]["w"], torch.ones(2))

    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "callback": Payload()}, unsafe)
    with pytest.raises(DataFormatError, match=r"pickled Python objects \(.*Payload\)") as error:
        load_checkpoint(unsafe)
    assert str(unsafe) in str(error.value) and "weights_only" in str(error.value)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(DataFormatError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    with pytest.raises(DataFormatError, match="has no state_dict"):
        load_checkpoint(plain)


def test_checkpoint_path_errors_list_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(DataFormatError, match="is a directory") as error:
        existing_checkpoint(tmp_path)
    assert f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}" in error.value.fix
    assert existing_checkpoint("last") == "last"  # Lightning's own keywords pass through


def test_remote_code_runs_only_when_the_backbone_allows_it() -> None:
    calls: list[dict[str, Any]] = []

    class Recorder:
        @classmethod
        def from_pretrained(cls, name: str, **kwargs: Any) -> str:
            calls.append(kwargs)
            return name

    backbone = SimpleNamespace(weights="org/model", config=None, extra={})
    from_pretrained_weights(Recorder, backbone)
    backbone.extra["trust_remote_code"] = True
    from_pretrained_weights(Recorder, backbone)
    assert [c["trust_remote_code"] for c in calls] == [False, True]


def test_pretrained_backbone_refuses_shipped_code_unless_trusted(tmp_path: Path) -> None:
    """A model directory whose config points at its own Python (``auto_map``) is refused by default."""
    import json

    from transformers import BertConfig

    from models.backbone import iter_texts, pretrained_backbone, train_tokenizer
    from tests.conftest import SAMPLE

    tokenizer = train_tokenizer(list(iter_texts([SAMPLE / "train.json"], ["question"]))[:200], vocab_size=300)
    tokenizer.save_pretrained(tmp_path)
    BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path)  # fmt: skip
    plain = pretrained_backbone(str(tmp_path))
    assert plain.extra["trust_remote_code"] is False and plain.weights is None
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="shipped-code", auto_map={"AutoConfig": "configuration_shipped.ShippedConfig"})
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "configuration_shipped.py").write_text("raise SystemExit('remote code ran')\n", encoding="utf-8")
    with pytest.raises(ValueError, match="trust_remote_code"):
        pretrained_backbone(str(tmp_path))
