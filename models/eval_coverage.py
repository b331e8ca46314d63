"""Which part of the evaluation set an epoch's metrics cover, so partial validation is never silent.

Validation often sees only part of the data: Lightning's sanity check (2 batches), ``trainer.limit_val_batches``,
a run stopped mid-epoch. DDP's sampler also repeats a few examples to give every rank the same count. The
modules already score each example once (their torchmetrics states are de-duplicated by example index after
the gather); this module says *which* examples that is: it logs ``<prefix>_examples`` (scored),
``<prefix>_examples_total`` (in the split), ``<prefix>_examples_missing`` (never seen, so not in the score,
rather than scored 0) and, for windowed readers, ``<prefix>_examples_partial`` (scored from only some of
their windows), and warns with a few missing ids. ``main.eval_metrics`` turns them into ``subset``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["describe_subset", "log_coverage", "window_coverage"]


def window_coverage(example_index: Sequence[int], seen_features: Iterable[int]) -> tuple[set[int], set[int]]:
    """(examples with at least one window seen, those among them with some window unseen).

    ``example_index[f]`` is the example of feature ``f`` (the eval feature table); ``seen_features`` may repeat.
    """
    windows = Counter(example_index)
    seen_per_example = Counter(example_index[f] for f in set(seen_features))
    partial = {ex for ex, n in seen_per_example.items() if n < windows[ex]}
    return set(seen_per_example), partial


def log_coverage(
    module: Any, prefix: str, seen_ids: Iterable[str], all_ids: Sequence[str], partial: int | None = None
) -> None:
    """Log the coverage counts of one evaluation epoch and warn (outside the sanity check) about missing ids."""
    seen = set(seen_ids)
    missing = [i for i in all_ids if i not in seen]
    module.log(f"{prefix}_examples", float(len(seen)))
    module.log(f"{prefix}_examples_total", float(len(all_ids)))
    module.log(f"{prefix}_examples_missing", float(len(missing)))
    if partial is not None:
        module.log(f"{prefix}_examples_partial", float(partial))
    trainer = getattr(module, "_trainer", None)
    if not (missing or partial) or trainer is None or trainer.sanity_checking or not trainer.is_global_zero:
        return
    log.warning(
        "%s metrics cover %s (%s): the missing ones are left out of the scores, not scored 0; e.g. %s",
        prefix, describe_subset(len(seen), len(all_ids), len(missing), partial or 0),
        "trainer.limit_val_batches or an interrupted epoch" if missing else "windows cut off by limit_val_batches",
        missing[:5] or "-",
    )


def describe_subset(seen: int, total: int, missing: int, partial: int = 0) -> str:
    """``all 12 examples`` or ``8 of 12 examples (4 not evaluated, 1 from only some windows)``: metrics.json's ``subset``."""
    if not missing and not partial:
        return f"all {total} examples"
    notes = [f"{missing} not evaluated"] if missing else []
    if partial:
        notes.append(f"{partial} from only some windows")
    return f"{seen} of {total} examples ({', '.join(notes)})"
