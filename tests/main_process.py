"""``python main.py ...`` as a real child process, started from a fork server that has imported the heavy libraries.

Why: every end-to-end test runs main.py as a user would, and a fresh interpreter spends ~5 s of a 2-core CI
machine importing torch, Lightning, transformers, torchmetrics and datasets before Hydra even composes. A
``multiprocessing`` fork server imports them once per pytest worker; each run is then a fresh ``fork`` of that
server that executes ``main.py`` as ``__main__`` with the test's argv, environment and working directory, its
stdout and stderr in files, and its exit status the process's own. Everything the run does (Hydra, the project's
modules, Lightning, files, exit codes, atexit handlers) happens in that child as in ``python main.py``.

Runs whose environment must be read when a library is imported (``HF_HUB_OFFLINE``, ``PYTHONHASHSEED``, ...) use a
plain interpreter instead (``run_main(..., env=...)`` with such a key), as do the tests that send signals to a run.
``PYTHONPATH`` is honoured here as the interpreter honours it: its entries go to the front of ``sys.path``.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.process as process
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

# Imported once by the fork server; none of them reads the test's environment in a way a run depends on.
PRELOAD = ["torch", "lightning.pytorch", "transformers", "torchmetrics", "datasets", "hydra", "omegaconf", "tokenizers"]

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def _exit_code(stop: SystemExit) -> int:
    """What the interpreter turns ``sys.exit(code)`` into (a message is printed to stderr and gives 1)."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def _run_script(script: str, argv: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str) -> None:
    """The child: become ``python <script> <argv>`` in ``cwd`` with ``env``, then exit with the script's status."""
    out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    # a process of its own, not a worker of ours: multiprocessing (and libraries that ask it, e.g. transformers'
    # MLM collator) must see the main process of a fresh interpreter
    process.current_process().name = "MainProcess"
    process._parent_process = None
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [script, *argv]
    # as the interpreter does at start: the script's folder first, then PYTHONPATH's entries
    sys.path[:0] = [str(Path(script).parent), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop)
    except BaseException:  # noqa: BLE001 - the interpreter prints any uncaught error and exits with 1
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()  # what the interpreter runs at exit; os._exit below skips it
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_script(script: Path, argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float):
    """Run ``script`` with ``argv`` in a forked child; a ``subprocess.CompletedProcess`` like ``subprocess.run``'s."""
    with tempfile.TemporaryDirectory(prefix="main-run-") as tmp:
        stdout, stderr = str(Path(tmp) / "stdout"), str(Path(tmp) / "stderr")
        child = _CONTEXT.Process(target=_run_script, args=(str(script), argv, env, str(cwd), stdout, stderr))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired([str(script), *argv], timeout)
        out, err = (Path(p).read_text(encoding="utf-8", errors="replace") for p in (stdout, stderr))
    return subprocess.CompletedProcess([sys.executable, str(script), *argv], child.exitcode, out, err)
