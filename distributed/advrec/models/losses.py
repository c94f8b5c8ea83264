"""Training losses over candidate logits (B, C) whose column 0 is the positive item."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor], Tensor]


def bpr(logits: Tensor) -> Tensor:
    """Bayesian personalised ranking: mean of ``-log sigmoid(s_pos - s_neg)`` over all negatives.

    Written as ``softplus(s_neg - s_pos)`` after one ``split``: the same value in fewer ops, and
    `split`'s backward is one concatenation where two slices' would zero-fill and copy twice.
    """
    pos, neg = logits.split([1, logits.shape[1] - 1], dim=1)
    return F.softplus(neg - pos).mean()


def bce(logits: Tensor) -> Tensor:
    """Pointwise binary cross-entropy: the positive labelled 1, every negative 0."""
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)


def softmax(logits: Tensor) -> Tensor:
    """Sampled softmax cross-entropy with the positive as the target class."""
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long,
                                               device=logits.device))


LOSSES: dict[str, LossFn] = {"bpr": bpr, "bce": bce, "softmax": softmax}


def scored_rows(logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """The rows a loss is taken over, (P, C): sequence logits (B, L, C) keep the positions in
    ``batch["mask"]``; pair logits (B, C) are used as they are."""
    return logits[batch["mask"]] if "mask" in batch else logits


def batch_loss(loss_fn: LossFn, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """``loss_fn`` over the batch's `scored_rows`."""
    return loss_fn(scored_rows(logits, batch))
