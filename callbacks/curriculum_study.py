"""The curriculum study's table: every pacing x difficulty cell of a sweep, over seeds, against shuffling.

``python main.py -m +experiment=curriculum_study`` runs the grid; at the end of the sweep Hydra calls
:class:`CurriculumStudyReport`, which reads each job's ``metrics.json`` and ``.hydra/config.yaml`` and
writes ``curriculum_study.md`` / ``.json`` into the sweep dir (and the table into docs/curriculum.md, between
markers). Each cell is compared with ``pacing=none`` at the same seeds: a paired t-test on the metric
(scipy), then Benjamini-Hochberg across the cells, so "significant" survives the many comparisons.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from core.files import write_json, write_text_atomic
from datamodules.curriculum import EXPENSIVE, MRC_DIFFICULTIES, TEXT_DIFFICULTIES, curriculum_spec

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- curriculum_study:begin -->", "<!-- curriculum_study:end -->"
ALL_DIFFICULTIES = (*MRC_DIFFICULTIES, *TEXT_DIFFICULTIES, *EXPENSIVE)


def read_jobs(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(pacing, difficulty, seed, metrics) of every finished job under ``sweep_dir``; and the unfinished ones."""
    jobs, missing = [], []
    for config_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        job_dir = config_file.parent.parent
        cfg = OmegaConf.load(config_file)
        datamodule = OmegaConf.to_container(cfg.datamodule, resolve=False)  # a plain string stays a string
        spec = curriculum_spec(datamodule.get("curriculum"), ALL_DIFFICULTIES, default="context_length")
        metrics_file = job_dir / "metrics.json"
        if not metrics_file.is_file():
            missing.append(job_dir.name)
            continue
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        jobs.append({
            "job": job_dir.name, "pacing": spec.pacing, "difficulty": "-" if spec.pacing == "none" else spec.difficulty,
            "seed": int(cfg.seed), "metrics": metrics,
        })  # fmt: skip
    return jobs, missing


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(jobs: list[dict[str, Any]], metrics: Sequence[str], baseline: str = "none") -> list[dict[str, Any]]:
    """One row per (pacing, difficulty): mean and std of each metric over seeds, padding per epoch, and
    the paired comparison of the first metric with the baseline pacing (same seeds).

    ``pacing=none`` ignores the difficulty, so its runs at one seed are the same run: counted once.
    """
    import numpy as np
    from scipy import stats

    cells: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for job in jobs:
        cells.setdefault((job["pacing"], job["difficulty"]), {}).setdefault(job["seed"], job["metrics"])
    base = next((runs for (pacing, _), runs in cells.items() if pacing == baseline), {})
    rows = []
    for (pacing, difficulty), runs in sorted(cells.items(), key=lambda kv: (kv[0][0] != baseline, kv[0])):
        seeds = sorted(runs)
        row: dict[str, Any] = {"pacing": pacing, "difficulty": difficulty, "seeds": seeds}
        for name in metrics:
            values = [float(runs[s][name]) for s in seeds if name in runs[s]]
            row[name] = _mean_std(values) if values else (math.nan, math.nan)
        epochs = [runs[s].get("train_padding_fraction") or [] for s in seeds]
        width = min((len(e) for e in epochs), default=0)
        row["padding"] = [statistics.fmean(e[i] for e in epochs) for i in range(width)]
        row["train_seconds"] = statistics.fmean(float(runs[s].get("train_seconds", math.nan)) for s in seeds)
        shared = [s for s in seeds if s in base] if pacing != baseline else []
        if len(shared) >= 2:
            ours = np.array([float(runs[s][metrics[0]]) for s in shared])
            theirs = np.array([float(base[s][metrics[0]]) for s in shared])
            row["delta"] = float(np.mean(ours - theirs))
            row["p"] = float(stats.ttest_rel(ours, theirs).pvalue) if np.any(ours != theirs) else 1.0
        rows.append(row)
    tested = [r for r in rows if "p" in r and not math.isnan(r["p"])]
    if tested:
        adjusted = stats.false_discovery_control([r["p"] for r in tested], method="bh")
        for row, q in zip(tested, adjusted, strict=True):
            row["p_adjusted"] = float(q)
    return rows


def markdown(rows: list[dict[str, Any]], metrics: Sequence[str], alpha: float, command: str) -> str:
    """The table and a plain statement of what is (not) significant."""
    head = ["pacing", "difficulty", "seeds", *(f"{m} (mean ± std)" for m in metrics),
            f"Δ{metrics[0]} vs none (paired)", "p (BH-adjusted)", "padding per epoch", "train s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [row["pacing"], row["difficulty"], str(len(row["seeds"]))]
        spread = len(row["seeds"]) > 1  # one seed has no spread to show
        cells += [f"{row[m][0]:.1f} ± {row[m][1]:.1f}" if spread else f"{row[m][0]:.1f}" for m in metrics]
        cells.append(f"{row['delta']:+.1f}" if "delta" in row else "")
        cells.append(f"{row['p']:.3f} ({row['p_adjusted']:.3f})" if "p_adjusted" in row else "")
        cells.append(" / ".join(f"{p:.2f}" for p in row["padding"]))
        cells.append(f"{row['train_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    significant = [r for r in rows if r.get("p_adjusted", 1.0) < alpha]
    tested = [r for r in rows if "p_adjusted" in r]
    if not tested:
        verdict = "No cell has two or more seeds shared with `pacing=none`: nothing could be tested."
    elif significant:
        named = ", ".join(f"{r['pacing']}/{r['difficulty']} ({r['delta']:+.1f})" for r in significant)
        verdict = (f"Significantly different from shuffling ({metrics[0]}, paired t-test over seeds, "
                   f"Benjamini-Hochberg q < {alpha}): {named}. Every other difference is within seed noise.")
    else:
        verdict = (f"No pacing differs significantly from shuffling ({metrics[0]}, paired t-test over seeds, "
                   f"Benjamini-Hochberg q < {alpha}, {len(tested)} comparisons): the differences are within "
                   "seed noise at this number of seeds.")
    return (f"`{command}` ({date.today().isoformat()})\n\n" + "\n".join(lines) + "\n\n" + verdict
            + " Padding: the share of padded tokens in the training batches of each epoch.\n")


def update_readme(readme: Path, table: str) -> bool:
    """Replace what lies between the study markers of the readme file (docs/curriculum.md) with ``table``; False if it has no markers."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if BEGIN not in text or END not in text:
        return False
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    write_text_atomic(readme, f"{before}{BEGIN}\n{table}{END}{after}")
    return True


class CurriculumStudyReport(Callback):
    """Hydra callback (``hydra.callbacks``): the study table once every job of the sweep has run."""

    def __init__(self, metrics: Sequence[str] = ("exact_match", "f1"), baseline: str = "none", alpha: float = 0.05,
                 readme: str | None = "docs/curriculum.md", command: str = "python main.py -m +experiment=curriculum_study") -> None:
        self.metrics = list(metrics)
        self.baseline = baseline
        self.alpha = alpha
        self.readme = readme
        self.command = command

    def report(self, sweep_dir: Path) -> str:
        """Write ``curriculum_study.md`` and ``.json`` into ``sweep_dir`` (and the readme file); the markdown."""
        jobs, missing = read_jobs(sweep_dir)
        rows = summarise(jobs, self.metrics, self.baseline)
        table = markdown(rows, self.metrics, self.alpha, self.command)
        if missing:
            table += f"\nJobs without metrics.json (failed or unfinished, left out): {', '.join(missing)}.\n"
        write_json(sweep_dir / "curriculum_study.json", {"rows": rows, "missing": missing, "jobs": jobs})
        write_text_atomic(sweep_dir / "curriculum_study.md", table)
        if self.readme:
            readme = Path(self.readme) if Path(self.readme).is_absolute() else ROOT / self.readme
            if not update_readme(readme, table):
                log.warning("%s has no %s ... %s markers: the table is only in the sweep dir", readme, BEGIN, END)
        print(table)
        return table

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report(Path(config.hydra.sweep.dir))
