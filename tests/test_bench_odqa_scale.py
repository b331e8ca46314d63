"""bench/odqa_scale.py --quick: both sides run end to end, and the same passages give the same answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_odqa_scale_quick_reports_every_stage_and_agrees_on_same_passages(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "odqa_scale.py"),
            "--quick",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # ~55 s on 2 idle cores; several minutes when the suite runs beside other jobs
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    for row in ("index", "retrieval", "reading", "**end to end**", "recall@10", "EM vs generated gold"):
        assert row in rows, row
    assert "target faster end to end:" in done.stdout and "target peak RSS" in done.stdout
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["info"] == {"passages": 1000, "questions": 30, "reader": "reader-quick"}
    for side in ("ours", "baseline"):
        stages = result[side]["stages"]
        assert set(stages) == {"index", "retrieval", "reading"}
        peaks = [stages[s]["peak_rss_mb"] for s in ("index", "retrieval", "reading")]
        assert peaks == sorted(peaks) and peaks[0] > 0  # VmHWM only grows
        assert result[side]["seconds"] > 0 and 0.0 <= result[side]["exact_match"] <= 100.0
    # BM25 finds most questions' own passage (they are made of its words)
    assert result["ours"]["recall"] >= 0.8
    # the same passages read by ours (concat) and by run_qa + Trainer + utils_qa: the same answers
    assert result["same_passages_identical_share"] == 1.0
    # the next run loads what the first saved (ours retriever.index_dir, the baseline its pickles) and answers alike
    assert result["next_run_same_answers"] == {"ours": True, "baseline": True}
    assert set(result["ours_next"]["stages"]) == set(result["baseline_next"]["stages"]) == {"index", "retrieval", "reading"}
    saved = next((tmp_path / "work").glob("*/saved-*"))
    assert (saved / "ours-index" / "manifest.json").is_file() and (saved / "baseline" / "tfidv.bin").is_file()
    assert done.stdout.count("target faster end to end:") == 2
