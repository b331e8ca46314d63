"""The framework's one entry point: Hydra composes the run, ``task`` says what to do with it (``tasks/``).

    python main.py +experiment=mrc_curriculum
    python main.py task=validate ckpt_path=outputs/.../checkpoints/last.ckpt
    python main.py task=predict ckpt_path=... datamodule.test_file=test.json
    python main.py task=score predictions=predictions.json datamodule.validation_file=gold.json
    python main.py task=ensemble ensemble.runs=[multirun/re_kfold/<date>/<time>]
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core.config import register_resolvers  # noqa: E402
from core.distributed import in_multirun  # noqa: E402
from tasks.runner import run_task  # noqa: E402
from tasks.user_errors import config_hint, renamed_key_error, user_error  # noqa: E402

# Lightning prints through its own handler; without this Hydra's root handler prints every line twice.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).propagate = False
warnings.filterwarnings("ignore", message=r".*treespec.*")  # Lightning 2.6 vs torch 2.13, harmless
register_resolvers()

# Set once Hydra has composed the config and a job runs: a failure before that is Hydra's (the command line).
_JOB_STARTED = False


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; a bad input or config ends with a clear message and exit code 1, not a traceback."""
    global _JOB_STARTED
    _JOB_STARTED = True
    try:
        metrics = run_task(cfg)
    except Exception as error:
        cause = user_error(error)
        if cause is None or cfg.get("debug", False):
            raise
        if in_multirun():  # the sweeper records the failed job (Optuna: state FAIL) and decides what follows
            raise cause from None
        print(f"\nerror: {cause}\n(run with debug=true for the full traceback)", file=sys.stderr)
        sys.exit(1)
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None


def cli() -> None:
    """``main()``; a renamed key stops at once, and when Hydra refuses the command line, the nearest key is named."""
    renamed = renamed_key_error(sys.argv[1:])
    if renamed:
        print(f"error: {renamed}", file=sys.stderr)
        sys.exit(1)
    try:
        main()
    except (SystemExit, Exception) as stop:
        failed = not isinstance(stop, SystemExit) or stop.code not in (0, None)
        if failed and not _JOB_STARTED:
            try:
                hint = config_hint(sys.argv[1:])
            except Exception:  # noqa: BLE001 - a hint must never hide the real error
                hint = None
            if hint:
                print(hint, file=sys.stderr)
        raise


if __name__ == "__main__":
    cli()
