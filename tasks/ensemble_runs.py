"""What every kind of ensemble shares: finding the runs' prediction files, weighted means, the runs' saved settings."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

PREDICTION_FILES = ("test_predictions.json", "predictions.json")


def natural_key(path: Path) -> list[Any]:
    """Sweep job dirs in job order: ``2`` before ``10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_runs(paths: Sequence[str | Path], filename: str) -> list[Path]:
    """Run dirs holding ``filename``: each given dir itself, or else every dir below it that has one (a sweep)."""
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise FileNotFoundError(f"ensemble.runs: {path} is not a directory (give run dirs or a sweep dir).")
        if (path / filename).exists():
            runs.append(path)
        else:
            runs += sorted({f.parent for f in path.rglob(filename)}, key=natural_key)
    return list(dict.fromkeys(runs))


def weighted_means(
    runs: Sequence[Sequence[Mapping[str, Any]]], weights: Sequence[float],
    values: Callable[[Mapping[str, Any]], Sequence[float]],
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Per id (first-seen order), the weighted mean of ``values(record)`` over the runs that predicted it; and
    the gold of every id whose records carry one (the runs must agree on it)."""
    totals: dict[str, torch.Tensor] = {}
    mass: dict[str, float] = {}
    gold: dict[str, Any] = {}
    for records, weight in zip(runs, weights, strict=True):
        for record in records:
            vector = torch.tensor([float(v) for v in values(record)], dtype=torch.float64)
            key = str(record["id"])
            totals[key] = totals.get(key, torch.zeros_like(vector)) + weight * vector
            mass[key] = mass.get(key, 0.0) + weight
            if "gold" in record:
                if key in gold and gold[key] != record["gold"]:
                    raise ValueError(f"ensemble: runs disagree on the gold label of {key} ({gold[key]} vs {record['gold']}).")
                gold[key] = record["gold"]
    means = {key: (total / mass[key] if mass[key] > 0 else total).tolist() for key, total in totals.items()}
    return means, gold


def saved_setting(run: Path, key: str) -> Any:
    """A value of a run's saved config (``.hydra/config.yaml``), or None when absent or unresolvable."""
    path = run / ".hydra" / "config.yaml"
    if not path.exists():
        return None
    try:
        return OmegaConf.select(OmegaConf.load(path), key, default=None)
    except Exception:  # an interpolation only a live Hydra job resolves: the caller falls back
        return None


def saved_model_setting(run: Path, key: str) -> Any:
    """``model.<key>`` of a run's saved config (e.g. no_relation_label)."""
    return saved_setting(run, f"model.{key}")
