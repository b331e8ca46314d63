"""W&B team dashboards, offline: what a run wrote into its offline run directory, read back."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from callbacks.loggers import wandb_logger
from callbacks.wandb_callbacks import TABLE_COLUMNS, context_snippet
from datamodules.mrc_formats import load_mrc_examples
from models.qa_metrics import exact_match_score, f1_score, metric_max_over_ground_truths
from tests.conftest import SAMPLE, TINY_RUN, read_json, run_main

_BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc, length, type) chunks


def wandb_records(run_file: Path) -> list[Any]:
    """Every protobuf record of a ``run-<id>.wandb`` file (wandb 0.31 ships no Python reader of its own)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    records, pos, buffer = [], 7, b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buffer = chunk if kind in (1, 2) else buffer + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buffer)
            records.append(record)
    return records


def offline_run(save_dir: Path) -> dict[str, Any]:
    """The one offline run under ``save_dir/wandb``: its run record, merged config, files dir, artifacts."""
    runs = sorted((save_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run in {save_dir}, found {runs}"
    (run_file,) = runs[0].glob("run-*.wandb")
    records = wandb_records(run_file)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config: dict[str, Any] = {}
    for update in [*run.config.update, *(u for r in records if r.HasField("config") for u in r.config.update)]:
        config[update.key] = json.loads(update.value_json)
    return {
        "run": run,
        "config": config,
        "files": runs[0] / "files",
        "artifacts": [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"],
    }


@pytest.fixture()
def wandb_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep W&B's staging area (offline artifacts) and settings inside the test's tmp dir."""
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_offline_run_has_config_table_lr_plot_and_model(tmp_path: Path, wandb_dirs: None) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.plot([1e-5, 1e-3, 1e-1], [3.0, 1.0, 5.0])
    plt.savefig(run_dir / "lr_finder.png")  # what the LR finder leaves in the run dir
    plt.close()
    overrides = [o for o in TINY_RUN if not o.startswith("logger=")]
    run_main(
        "+experiment=mrc_curriculum", *overrides, "logger=wandb", "logger.wandb.entity=kornlp-team",
        "logger.wandb.project=mrc-dash", "logger.wandb.log_model=true", "tags=[mrc,dash]",
        "callbacks.wandb_val_predictions.sample_size=5", run_dir=run_dir, cache_dir=tmp_path / "cache",
    )
    wb = offline_run(run_dir)
    run = wb["run"]
    assert (run.entity, run.project, run.run_group, run.job_type) == ("kornlp-team", "mrc-dash", "mrc_curriculum", "fit")
    assert list(run.tags) == ["mrc", "dash"] and run.display_name == "mrc_curriculum"
    # the resolved Hydra config is the run config
    assert wb["config"]["model"]["optimizer"]["lr"] == 3.0e-3
    assert wb["config"]["paths"]["output_dir"] == str(run_dir)
    assert wb["config"]["datamodule"]["max_train_examples"] == 48

    # a table of 5 sampled validation questions, its rows consistent with predictions.json and the gold file
    tables = sorted((wb["files"] / "media" / "table").glob("val_predictions_*.table.json"))
    assert tables, "no prediction table was logged"
    table = json.loads(tables[-1].read_text(encoding="utf-8"))
    assert table["columns"] == TABLE_COLUMNS and len(table["data"]) == 5
    predictions = read_json(run_dir / "predictions.json")
    gold = {ex["id"]: ex for ex in load_mrc_examples(SAMPLE / "validation.json")}
    for row in table["data"]:
        record = dict(zip(TABLE_COLUMNS, row, strict=True))
        example, answers = gold[record["id"]], [a["text"] for a in gold[record["id"]]["answers"]]
        assert record["prediction"] == predictions[record["id"]]
        assert record["question"] == example["question"] and record["gold"] == " | ".join(answers)
        assert answers[0] in record["context"] and len(record["context"]) < len(example["context"]) + 2
        em = 100.0 * metric_max_over_ground_truths(exact_match_score, record["prediction"], answers)
        assert record["exact_match"] == em
        assert record["f1"] == pytest.approx(100.0 * metric_max_over_ground_truths(f1_score, record["prediction"], answers))
    assert len({tuple(sorted(r[2] for r in json.loads(t.read_text())["data"])) for t in tables}) == 1  # same ids

    # the LR-finder plot and the checkpoints (log_model) went into the run
    assert list((wb["files"] / "media" / "images").glob("lr_finder_*.png"))
    models = [a for a in wb["artifacts"] if a.type == "model"]
    assert models and any("best" in a.aliases for a in models)
    assert {entry.path for a in models for entry in a.manifest.contents} == {"model.ckpt"}


def test_offline_without_a_key_online_with_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    offline = wandb_logger(project="p", save_dir=str(tmp_path), name="exp")
    assert offline._wandb_init["mode"] == "offline" and offline._wandb_init["group"] == "exp"
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    online = wandb_logger(project="p", save_dir=str(tmp_path), name="exp", group="team-sweep")
    assert "mode" not in online._wandb_init and online._offline is False
    assert online._wandb_init["group"] == "team-sweep"
    forced = wandb_logger(offline=True, log_model=True, project="p", save_dir=str(tmp_path))
    assert forced._wandb_init["mode"] == "offline"  # checkpoints are kept for `wandb sync`


def test_context_snippet_centres_the_answer() -> None:
    context = "가" * 50 + "정답" + "나" * 50
    snippet = context_snippet(context, 50, 2, window=5)
    assert snippet == "…" + "가" * 5 + "정답" + "나" * 5 + "…"
    assert context_snippet("짧은 정답", 3, 2, window=10) == "짧은 정답"
