"""Training losses over candidate logits (P, C).

Without labels, column 0 is the positive item and the other columns are negatives (ranking). With
labels (P, C), each logit has its own target: a click 0/1 (CTR), a rating (regression), or, for a
multi-task model, one target per task in a last dimension (P, C, T).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class LossFn(Protocol):
    def __call__(self, logits: Tensor, labels: Tensor | None = None, *,
                 rows: bool = False) -> Tensor:
        """``logits`` (P, C), ``labels`` (P, C) or None -> the mean loss (a scalar), or with
        ``rows`` each row's loss (P,), whose mean is that scalar (VAT's per-user loss,
        `advrec.adversarial.adaptive`)."""
        ...


def _row_means(loss: Tensor) -> Tensor:
    """(P, ...) elementwise losses -> (P,) each row's mean; every row has as many entries, so
    the mean of these is the batch's mean loss."""
    rows = loss.flatten(1)
    # one entry per row (BPR with one negative): a view, no reduction to run and differentiate
    return rows.mean(1) if rows.shape[1] > 1 else rows.view(-1)


def _unlabelled(name: str, labels: Tensor | None) -> None:
    if labels is not None:
        raise ValueError(f"the {name} loss ranks a positive against negatives and takes no labels")


def bpr(logits: Tensor, labels: Tensor | None = None, *, rows: bool = False) -> Tensor:
    """Bayesian personalised ranking: mean of ``-log sigmoid(s_pos - s_neg)`` over all negatives.

    Written as ``softplus(s_neg - s_pos)`` after one ``split``: the same value in fewer ops, and
    `split`'s backward is one concatenation where two slices' would zero-fill and copy twice.
    """
    _unlabelled("bpr", labels)
    pos, neg = logits.split([1, logits.shape[1] - 1], dim=1)
    loss = F.softplus(neg - pos)
    return _row_means(loss) if rows else loss.mean()


def bce(logits: Tensor, labels: Tensor | None = None, *, rows: bool = False) -> Tensor:
    """Pointwise binary cross-entropy against ``labels``; by default the positive (column 0) is
    labelled 1 and every negative 0."""
    if labels is None:
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none" if rows else "mean")
    return _row_means(loss) if rows else loss


def softmax(logits: Tensor, labels: Tensor | None = None, *, rows: bool = False) -> Tensor:
    """Softmax cross-entropy with the positive (column 0) as the target class."""
    _unlabelled("softmax", labels)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, reduction="none" if rows else "mean")


def mse(predictions: Tensor, labels: Tensor | None, *, rows: bool = False) -> Tensor:
    """Mean squared error of a regression (ratings) against ``labels``."""
    if labels is None:
        raise ValueError("the mse loss needs labels")
    loss = F.mse_loss(predictions, labels, reduction="none" if rows else "mean")
    return _row_means(loss) if rows else loss


LOSSES: dict[str, LossFn] = {"bpr": bpr, "bce": bce, "softmax": softmax}


class MultiTaskLoss:
    """``Σ_t w_t · loss_t(logits[..., t], labels[..., t])`` over tasks with a non-zero weight."""

    def __init__(self, losses: list[LossFn], weights: list[float]) -> None:
        self.terms = [(t, fn, w) for t, (fn, w) in enumerate(zip(losses, weights)) if w > 0]

    def __call__(self, logits: Tensor, labels: Tensor | None, *, rows: bool = False) -> Tensor:
        if labels is None:
            raise ValueError("a multi-task loss needs labels")
        return sum(w * fn(logits[..., t], labels[..., t], rows=rows) for t, fn, w in self.terms)


def scored_rows(logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """The rows a loss is taken over, (P, C, ...): sequence logits (B, L, C) keep the positions
    in ``batch["mask"]``; pair logits (B, C) are used as they are."""
    return logits[batch["mask"]] if "mask" in batch else logits


def batch_loss(loss_fn: LossFn, logits: Tensor, batch: dict[str, Tensor],
               rows: bool = False) -> Tensor:
    """``loss_fn`` over the batch's `scored_rows`, with its ``label`` rows when it has labels:
    the mean, or each row's loss (P,) with ``rows``."""
    labels = scored_rows(batch["label"], batch) if "label" in batch else None
    return loss_fn(scored_rows(logits, batch), labels, rows=rows)
