"""One command, one result: tokenizers train to the same bytes in every process, and runs started at the same
moment on one cold cache (tokenizer, features, tokenised corpus, saved index) give what a run alone gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLE, TINY_RUN, read_json, run_main, start_main

TRAIN_TOKENIZERS = """
import sys, unicodedata
from pathlib import Path
from core.tokenizer_training import train_tokenizer
from models.backbone import iter_texts
texts = list(dict.fromkeys(unicodedata.normalize("NFC", t) for t in iter_texts([sys.argv[1]], ["context", "question"])))
out = Path(sys.argv[2])
# a few hundred texts and vocabularies past their frequent words: many pairs tie on frequency
train_tokenizer(texts[:300], vocab_size=2000).save_pretrained(out / "wordpiece")
train_tokenizer(texts[:300], vocab_size=3000, algorithm="bpe").save_pretrained(out / "bpe")
train_tokenizer(texts[:300], vocab_size=3000, algorithm="bpe", pre_tokenizer="metaspace", limit_alphabet=200
                ).save_pretrained(out / "metaspace")
"""


def test_tokenizer_json_is_byte_identical_across_processes(tmp_path: Path) -> None:
    # HF's trainer alone gave 3-4 different vocabularies in 4 processes for these settings (hash-map order)
    outs = []
    for seed in ("0", "1", "2"):
        out = tmp_path / f"seed{seed}"
        subprocess.run(
            [sys.executable, "-c", TRAIN_TOKENIZERS, str(SAMPLE / "train.json"), str(out)],
            cwd=ROOT, check=True, env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        )
        outs.append(out)
    for kind in ("wordpiece", "bpe", "metaspace"):
        first = (outs[0] / kind / "tokenizer.json").read_bytes()
        assert len(first) > 10_000
        for other in outs[1:]:
            assert (other / kind / "tokenizer.json").read_bytes() == first, f"{kind}: {other} differs"


def _cache_entries(cache: Path) -> dict[str, list[str]]:
    """Entries of the cache (not the lock files beside them)."""
    return {
        part: sorted(p.name for p in (cache / part).iterdir() if not p.name.endswith(".lock"))
        for part in ("tokenizers", "features")
    }


def test_concurrent_fits_on_one_cold_cache_match_a_run_alone(tmp_path: Path) -> None:
    # a 3,000-piece vocabulary: HF's trainer alone gave 3 different ones in 4 processes on this text
    fit = [*TINY_RUN, "backbone.tokenizer.vocab_size=3000", "++trainer.max_steps=3", "export.enabled=false"]
    shared = tmp_path / "shared_cache"
    runs = [start_main(*fit, run_dir=tmp_path / f"run{i}", cache_dir=shared) for i in range(2)]
    alone_dir = tmp_path / "alone"
    run_main(*fit, run_dir=alone_dir, cache_dir=tmp_path / "alone_cache")
    for i, process in enumerate(runs):
        assert process.wait(timeout=600) == 0, (tmp_path / f"run{i}.out").read_text(encoding="utf-8")[-3000:]

    alone = read_json(alone_dir / "metrics.json")
    for i in range(2):
        metrics = read_json(tmp_path / f"run{i}" / "metrics.json")
        for key in ("exact_match", "f1", "examples", "global_step"):
            assert metrics[key] == alone[key], (key, metrics[key], alone[key])
        assert (tmp_path / f"run{i}" / "predictions.json").read_bytes() == (alone_dir / "predictions.json").read_bytes()
        saved = tmp_path / f"run{i}" / "backbone" / "tokenizer.json"
        assert saved.read_bytes() == (alone_dir / "backbone" / "tokenizer.json").read_bytes()
    # one tokenizer and one feature table per split, as alone; nothing half-written left behind
    entries = _cache_entries(shared)
    assert entries == _cache_entries(tmp_path / "alone_cache")
    assert len(entries["tokenizers"]) == 1 and len(entries["features"]) == 2
    assert not [p for p in shared.rglob(".tmp-*")]


def test_concurrent_retrieval_on_one_index_dir(tmp_path: Path) -> None:
    """hf vocabulary training, the token cache and the saved index, built by one of two runs and read by the other."""
    retrieve = [
        "task=retrieve", "print_config=false", "retriever.tokenizer.name=hf", "retriever.tokenizer.hf_vocab_size=500",
        f"datamodule.validation_file={SAMPLE / 'validation.json'}", f"retriever.index_dir={tmp_path / 'index'}",
    ]
    cache = tmp_path / "cache"
    runs = [start_main(*retrieve, run_dir=tmp_path / f"run{i}", cache_dir=cache) for i in range(2)]
    for i, process in enumerate(runs):
        assert process.wait(timeout=600) == 0, (tmp_path / f"run{i}.out").read_text(encoding="utf-8")[-3000:]
    metrics = [read_json(tmp_path / f"run{i}" / "retrieval_metrics.json") for i in range(2)]
    assert metrics[0]["recall@1"] == metrics[1]["recall@1"] > 0.5
    retrieved = [(tmp_path / f"run{i}" / "retrieved.json").read_bytes() for i in range(2)]
    assert retrieved[0] == retrieved[1]
    built = [read_json(tmp_path / f"run{i}" / "metrics.json").get("index_loaded") for i in range(2)]
    assert sorted(built) == [False, True], built  # one run built the index, the other waited and loaded it
    assert len(list((cache / "retrieval" / "hf_tokenizers").glob("*.json"))) == 1
