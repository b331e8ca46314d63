"""The bi-encoder's loss: DPR's in-batch negatives (Karpukhin et al. 2020), gathered across DDP processes.

Every question is scored against every passage of the (global) batch: its positive, the other questions'
positives and all hard negatives; the loss is the cross-entropy of picking its positive. Two things the plain
recipe gets wrong and this one does not:

* a passage can be the positive of two questions of one batch (several questions per context, as in KorQuAD):
  for each question, every *other* column holding the text of its positive is masked out (``passage_keys``),
  instead of being counted as a negative of itself;
* under DDP the passages of every process join the batch (``torch.distributed.nn.all_gather``, which carries
  the gradient back to the process that embedded them), padded to the largest process's count and masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dpr_loss", "gather_passages"]

PAD_KEY = -1


def dpr_loss(
    questions: torch.Tensor,
    passages: torch.Tensor,
    positive: torch.Tensor,
    passage_keys: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean cross-entropy of each question's positive among all ``passages``.

    ``questions`` (B, d), ``passages`` (P, d), ``positive`` (B,) the column of each question's positive,
    ``passage_keys`` (P,) a text id per passage (``PAD_KEY``: padding, never scored). Scores are inner
    products divided by ``temperature``; a column other than the positive whose key equals the positive's is
    masked (the same passage brought by another question).
    """
    scores = questions.float() @ passages.float().T / temperature
    own = passage_keys[positive]  # (B,)
    same_text = passage_keys.unsqueeze(0) == own.unsqueeze(1)
    not_positive = torch.ones_like(same_text)
    not_positive[torch.arange(len(positive), device=positive.device), positive] = False
    masked = (same_text & not_positive) | (passage_keys == PAD_KEY).unsqueeze(0)
    scores = scores.masked_fill(masked, torch.finfo(scores.dtype).min)
    return F.cross_entropy(scores, positive)


def gather_passages(passages: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every process's passages and keys (this process's with their gradient), and the column offset of this
    process's first passage. Without an initialised process group: the inputs and offset 0."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return passages, keys, 0
    from torch.distributed.nn.functional import all_gather

    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([passages.size(0)], device=passages.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    width = int(max(c.item() for c in counts))
    pad = width - passages.size(0)
    if pad:
        passages = torch.cat([passages, passages.new_zeros(pad, passages.size(1))])
        keys = torch.cat([keys, keys.new_full((pad,), PAD_KEY)])
    gathered = torch.cat(all_gather(passages))  # differentiable: gradients flow back to their process
    all_keys = [torch.empty_like(keys) for _ in range(world)]
    dist.all_gather(all_keys, keys)
    return gathered, torch.cat(all_keys), rank * width
