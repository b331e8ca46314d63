"""``SpanCandidates`` keeps each step's rows in shared blocks: what it computes is still every update, in order."""

from __future__ import annotations

import torch

from models.span_candidates import SpanCandidates


def step(first: int, rows: int, k: int = 3) -> tuple[torch.Tensor, ...]:
    """One batch's candidates for features ``first .. first + rows - 1`` (values tell the rows apart)."""
    index = torch.arange(first, first + rows)
    grid = index[:, None] * 10 + torch.arange(k)
    return index, grid, grid.float() / 7, grid + 1, grid.float() / 3, index.float() / 5


def test_rows_across_blocks_come_back_in_update_order() -> None:
    metric = SpanCandidates(block_rows=4)
    steps = [step(0, 3), step(3, 3), step(6, 1), step(7, 6)]  # fills, overflows and outgrows a block
    for values in steps:
        metric.update(*values)
    state = metric.compute()
    for position, name in enumerate(SpanCandidates.fields):
        expected = torch.cat([values[position] for values in steps])
        assert torch.equal(state[name], expected.to(state[name].dtype)), name
    assert state["feature_index"].tolist() == list(range(13))


def test_reset_starts_a_new_epoch() -> None:
    metric = SpanCandidates(block_rows=8)
    metric.update(*step(0, 5))
    metric.compute()
    metric.reset()
    assert metric.compute() == {}
    metric.update(*step(20, 2))
    assert metric.compute()["feature_index"].tolist() == [20, 21]


def test_a_kept_result_is_not_overwritten_by_the_next_epoch() -> None:
    """The next epoch writes new blocks: what ``compute`` returned before stays as it was."""
    metric = SpanCandidates(block_rows=8)
    metric.update(*step(0, 2))
    first = metric.compute()
    metric.reset()
    metric.update(*step(50, 2))
    assert first["feature_index"].tolist() == [0, 1]
