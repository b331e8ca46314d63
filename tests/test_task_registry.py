"""The task registry: every ``task=`` name resolves to a verb, and a verb's module loads only when it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasks.registry import TASKS, VERB_PATHS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(VERB_PATHS))
def test_every_task_name_resolves_to_a_verb(name: str) -> None:
    assert callable(TASKS[name]) and TASKS[name].__name__ == f"task_{name}"


def test_an_unknown_task_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        TASKS["trian"]
    assert "trian" not in TASKS and len(TASKS) == len(VERB_PATHS)


def test_the_entry_point_and_a_retrieval_verb_import_no_torch() -> None:
    """main.py and the registry import nothing heavy; task=retrieve's verb needs no torch (~250 MB of RSS)."""
    code = (
        "import sys; sys.argv = ['main.py']; import main; from tasks.registry import TASKS; "
        "assert 'torch' not in sys.modules, 'main.py imports torch'; TASKS['retrieve']; "
        "assert 'torch' not in sys.modules, 'task=retrieve imports torch'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
